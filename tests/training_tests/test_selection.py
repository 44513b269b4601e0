"""The selection rules of rejection sampling on a hand-made reward matrix (pure Python: no database, no model)."""

import math
import statistics

import pytest

from training import selection

NAN = float("nan")
# prompt -> scores by sample number; None: not selectable (an empty response, a repeated text).
MATRIX = {
    10: [0.5, 2.0, 1.0, 2.0],  # samples 1 and 3 tie
    20: [-1.0, 3.0, None, 0.0],
    30: [None, None, None, None],  # nothing to select
    40: [2.0, 2.0, 1.5, NAN],  # ties with prompt 10's best; a NaN is never selected
    50: [1.0, 1.0, 1.0, 1.0],  # the judge cannot tell them apart
}


def test_best_of_n_keeps_each_prompts_top_response_ties_to_the_lower_sample():
    assert selection.best_of_n(MATRIX) == [(20, 1), (10, 1), (40, 0), (50, 0)]
    assert selection.select("best-of-n", MATRIX, 7) == selection.best_of_n(MATRIX)  # k does not apply


def test_top_k_per_prompt_keeps_k_of_each_prompt_best_first_over_all():
    assert selection.top_k_per_prompt(MATRIX, 2) == [(20, 1), (10, 1), (10, 3), (40, 0), (40, 1), (50, 0), (50, 1), (20, 3)]
    # More than a prompt has: all of its selectable responses, no more.
    assert sorted(selection.top_k_per_prompt(MATRIX, 4)) == sorted(
        (prompt, sample) for prompt, row in MATRIX.items() for sample, score in enumerate(row)
        if score is not None and not math.isnan(score)
    )
    assert selection.top_k_per_prompt(MATRIX, 1) == selection.best_of_n(MATRIX)


def test_top_k_overall_ranks_every_response_together():
    assert selection.top_k_overall(MATRIX, 4) == [(20, 1), (10, 1), (10, 3), (40, 0)]
    # A tie at the cut goes to the lower prompt, then the lower sample.
    assert selection.top_k_overall(MATRIX, 5) == [(20, 1), (10, 1), (10, 3), (40, 0), (40, 1)]
    assert selection.top_k_overall(MATRIX, 7)[5:] == [(40, 2), (10, 2)]
    assert len(selection.top_k_overall(MATRIX, 1000)) == 4 + 3 + 3 + 4  # every selectable response once
    assert selection.top_k_overall({1: [0.1, 0.9], 2: [0.8, 0.2]}, 2) == [(1, 1), (2, 0)]  # one prompt may give none


def test_the_same_matrix_in_another_order_selects_the_same():
    shuffled = {prompt: MATRIX[prompt] for prompt in (50, 30, 10, 40, 20)}
    for rule in selection.RULES:
        assert selection.select(rule, shuffled, 2) == selection.select(rule, MATRIX, 2)


@pytest.mark.parametrize("k", [0, -1, 1.5, True, None])
def test_k_must_be_a_whole_number_of_at_least_one(k):
    for rule in ("top-k-per-prompt", "top-k-overall"):
        with pytest.raises(ValueError, match="k must be"):
            selection.select(rule, MATRIX, k)
    with pytest.raises(ValueError, match="Unknown selection rule"):
        selection.select("best-of-all", MATRIX, 1)


def test_best_and_worst_per_prompt_only_where_the_judge_scored_them_apart():
    assert selection.best_and_worst(MATRIX) == {10: (1, 0), 20: (1, 0), 40: (0, 2)}
    assert selection.best_and_worst({1: [None, 2.0], 2: [0.3, 0.3]}) == {}  # one selectable; a tie


def test_the_summary_describes_every_score_and_the_selection():
    chosen = selection.best_of_n(MATRIX)
    summary = selection.summary(MATRIX, chosen, bins=4)
    scores = [0.5, 2.0, 1.0, 2.0, -1.0, 3.0, 0.0, 2.0, 2.0, 1.5, 1.0, 1.0, 1.0, 1.0]
    assert summary["scores"]["count"] == len(scores)
    assert summary["scores"]["mean"] == pytest.approx(statistics.fmean(scores))
    assert summary["scores"]["std"] == pytest.approx(statistics.pstdev(scores))
    assert (summary["scores"]["min"], summary["scores"]["max"]) == (-1.0, 3.0)
    histogram = summary["scores"]["histogram"]
    assert histogram["edges"] == [-1.0, 0.0, 1.0, 2.0, 3.0]
    assert histogram["counts"] == [1, 2, 6, 5]  # [-1, 0), [0, 1), [1, 2), [2, 3] (the top edge in the last bin)
    assert histogram["selected"] == [0, 0, 1, 3]  # 3.0, 2.0, 2.0 and 1.0 were selected
    assert summary["selected"] == {"count": 4, "mean": 2.0, "min": 1.0, "max": 3.0}
    assert summary["gain"] == pytest.approx(2.0 - statistics.fmean(scores))
    spreads = [1.5, 4.0, 0.5, 0.0]  # prompts 10, 20, 40, 50 (30 has no score)
    assert summary["per_prompt_spread"]["count"] == 4
    assert summary["per_prompt_spread"]["mean"] == pytest.approx(statistics.fmean(spreads))
    assert summary["per_prompt_spread"]["median"] == pytest.approx(statistics.median(spreads))
    assert (summary["per_prompt_spread"]["min"], summary["per_prompt_spread"]["max"]) == (0.0, 4.0)


def test_a_matrix_without_scores_or_with_one_value_has_no_figures_to_break():
    empty = selection.summary({1: [None, None]}, [])
    assert empty["scores"]["count"] == 0 and empty["gain"] is None and empty["scores"]["histogram"]["counts"] == []
    flat = selection.histogram([0.7, 0.7, 0.7], [0.7])
    assert flat == {"edges": [0.7, 1.7], "counts": [3], "selected": [1]}
