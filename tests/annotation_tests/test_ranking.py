"""Tiers and pairs (pure): validation of every malformed ranking, pair derivation, display order."""

import itertools

import pytest

from annotation.ranking import (
    InvalidRanking, derive_pairs, display_order, letter_tiers, letters_for, ranking_text, tiers_from_letters, validate_tiers,
)

A, B, C, D = 1, 2, 3, 4


def pairs_of(tiers):
    return {(p.chosen, p.rejected, p.chosen_rank, p.rejected_rank, p.margin) for p in derive_pairs(tiers)}


def test_d_c_a_equals_b_gives_five_pairs_with_ranks_and_margins():
    assert pairs_of([[D], [C], [A, B]]) == {
        (D, C, 1, 2, 1), (D, A, 1, 3, 2), (D, B, 1, 3, 2), (C, A, 2, 3, 1), (C, B, 2, 3, 1),
    }


def test_all_equal_yields_no_pairs():
    assert derive_pairs([[A, B, C, D]]) == []


@pytest.mark.parametrize("k", range(2, 9))
def test_strict_order_gives_every_pair_for_k_from_2_to_8(k):
    tiers = [[n] for n in range(k)]
    pairs = derive_pairs(tiers)
    assert len(pairs) == k * (k - 1) // 2
    assert all(p.chosen < p.rejected and p.margin == p.rejected - p.chosen for p in pairs)


@pytest.mark.parametrize("k", range(2, 9))
def test_pairs_count_for_every_tiering_of_k(k):
    """For any split into tiers, pairs = all pairs minus the pairs inside tiers."""
    ids = list(range(k))
    for cuts in itertools.product([False, True], repeat=k - 1):
        tiers, tier = [], [ids[0]]
        for response, cut in zip(ids[1:], cuts):
            if cut:
                tiers.append(tier)
                tier = []
            tier.append(response)
        tiers.append(tier)
        tied = sum(len(t) * (len(t) - 1) // 2 for t in tiers)
        assert len(derive_pairs(tiers)) == k * (k - 1) // 2 - tied


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        (None, "at least one tier"),
        ([], "at least one tier"),
        ("D > C", "at least one tier"),
        ([[A, B], []], "Tier 2 is empty"),
        ([[A, B], C], "Tier 2 is empty or not a list"),
        ([[A, "B"]], "something other than response ids"),
        ([[A, True]], "something other than response ids"),
        ([[A, B, C]], "not placed: 4"),
        ([[A, B], [C, A]], "placed more than once: 1; not placed: 4"),
        ([[A, B], [C, 99]], "not shown in this item: 99"),
        ([[A, A, B, C]], "placed more than once: 1"),
        ([[A, B], [C, D], [A]], "shows 4 responses; the ranking places more"),
        ([[A], [B], [C], [D], []], "shows 4 responses; the ranking places more"),
    ],
)
def test_malformed_rankings_are_refused(tiers, message):
    with pytest.raises(InvalidRanking, match=message):
        validate_tiers(tiers, [A, B, C, D])


def test_a_huge_ranking_is_refused_before_any_other_work_with_a_short_message():
    """An 800 KB `tiers` list used to take seconds of CPU (a count per element) and came back with every id."""
    huge = [list(range(1, 200_001))]
    with pytest.raises(InvalidRanking) as refused:
        validate_tiers(huge, [A, B, C, D])
    assert str(refused.value) == "This item shows 4 responses; the ranking places more."
    with pytest.raises(InvalidRanking, match="places more"):
        validate_tiers([[A]] * 200_000, [A, B, C, D])


def test_valid_ranking_is_normalised():
    assert validate_tiers([[D], [C], [A, B]], [A, B, C, D]) == [[D], [C], [A, B]]


def test_display_order_is_stable_per_labeler_and_item_and_differs_between_labelers():
    ids = list(range(100, 108))
    first = display_order(ids, labeler_id=1, item_id=5)
    assert first == display_order(list(reversed(ids)), labeler_id=1, item_id=5)
    orders = {tuple(display_order(ids, labeler_id=labeler, item_id=5)) for labeler in range(1, 20)}
    assert len(orders) > 10


def test_ranking_text_uses_letters():
    letters = letters_for([A, B, C, D])
    assert ranking_text([[D], [C], [B, A]], letters) == "D > C > A = B"


def test_letters_become_the_ids_of_the_labelers_display_order():
    order = [30, 10, 40, 20]  # A=30, B=10, C=40, D=20
    assert tiers_from_letters([["D"], ["C"], ["A", "B"]], order) == [[20], [40], [30, 10]]
    assert letter_tiers([[20], [40], [10, 30]], order) == [["D"], ["C"], ["A", "B"]]


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ([[30], [10], [40], [20]], r"Rank by the letters shown \(A, B, C, D\), not by response ids"),
        ([["A", 10], ["C", "D"]], "not by response ids"),
        ([["a"], ["B", "C", "D"]], "not shown in this item: a"),
        ([["A", "B", "C", "E"]], "not shown in this item: E; not placed: D"),
        ([["A", "A"], ["C", "D"]], "placed more than once: A; not placed: B"),
        ([["A", None], ["C", "D"]], "Tier 1 holds something other than letters"),
        ([["X" * 100_000], ["B"], ["C"], ["D"]], "not shown in this item: XXXXXXXXXXXX;"),
        ([["A"]] * 200_000, "^This item shows 4 responses; the ranking places more.$"),
        ([list(range(200_000))], "^This item shows 4 responses; the ranking places more.$"),  # before the ids check
    ],
)
def test_labelers_rank_by_letters_only(tiers, message):
    with pytest.raises(InvalidRanking, match=message) as refused:
        tiers_from_letters(tiers, [30, 10, 40, 20])
    assert len(str(refused.value)) < 200
