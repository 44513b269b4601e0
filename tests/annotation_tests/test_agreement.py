"""Agreement on hand-computed cases."""

import pytest

from annotation.agreement import ItemRankings, compare, summarize

A, B, C, D = 1, 2, 3, 4


def test_identical_strict_rankings_agree_fully():
    result = compare([[A], [B], [C], [D]], [[A], [B], [C], [D]])
    assert (result.agreed, result.compared, result.agreement, result.tau) == (6, 6, 1.0, 1.0)


def test_reversed_rankings_disagree_fully():
    result = compare([[A], [B], [C], [D]], [[D], [C], [B], [A]])
    assert (result.agreement, result.tau) == (0.0, -1.0)


def test_one_swap_of_four():
    # A>B>C>D vs B>A>C>D: 5 of 6 pairs agree; tau = (5 - 1) / 6.
    result = compare([[A], [B], [C], [D]], [[B], [A], [C], [D]])
    assert (result.agreed, result.compared) == (5, 6)
    assert result.tau == pytest.approx(4 / 6)


def test_ties_are_excluded_from_pairwise_agreement_and_handled_by_tau_b():
    # First ties A=B; second has A>B>C. Comparable pairs: (A,C), (B,C) -> both agree.
    result = compare([[A, B], [C]], [[A], [B], [C]])
    assert (result.agreed, result.compared) == (2, 2)
    # tau-b: concordant 2, discordant 0, pairs 3, ties in first 1, in second 0 -> 2 / sqrt(2 * 3).
    assert result.tau == pytest.approx(2 / (2 * 3) ** 0.5)


def test_all_tied_makes_tau_undefined_and_nothing_comparable():
    result = compare([[A, B, C]], [[A], [B], [C]])
    assert (result.compared, result.agreement, result.tau) == (0, None, None)


def test_summary_pools_pairs_per_project_and_per_labeler():
    items = [
        ItemRankings(1, {10: [[A], [B], [C], [D]], 11: [[A], [B], [C], [D]], 12: [[B], [A], [C], [D]]}),
        ItemRankings(2, {10: [[A], [B]], 11: [[B], [A]]}),
        ItemRankings(3, {10: [[A], [B]]}),  # a single ranking: no agreement
    ]
    summary = summarize(items)
    # Item 1: (10,11) 6/6, (10,12) 5/6, (11,12) 5/6. Item 2: (10,11) 0/1.
    assert summary["project"]["pairs_compared"] == 19
    assert summary["project"]["pairwise_agreement"] == round(16 / 19, 4)
    assert summary["project"]["items"] == 2
    assert summary["labelers"][10]["pairwise_agreement"] == round(11 / 13, 4)
    assert summary["labelers"][12]["pairwise_agreement"] == round(10 / 12, 4)
    assert summary["labelers"][12]["items"] == 1
    assert [entry["item"] for entry in summary["items"]] == [1, 2]
    assert summary["items"][1]["kendall_tau"] == -1.0
