"""The evaluation statistics against cases worked out by hand (training.stats imports no Django)."""

import math

import numpy as np
import pytest

from training import stats
from training.stats import Comparison, Response


def test_bootstrap_of_a_constant_is_the_constant():
    estimate = stats.bootstrap_mean([0.5] * 7)
    assert (estimate.value, estimate.low, estimate.high, estimate.count) == (0.5, 0.5, 0.5, 7)


def test_bootstrap_is_reproducible_and_brackets_the_mean():
    values = [1, 0, 1, 1, 0.5, 1, 0, 1]
    first, again = stats.bootstrap_mean(values), stats.bootstrap_mean(values)
    assert first == again
    assert first.value == pytest.approx(5.5 / 8)
    assert 0 <= first.low < first.value < first.high <= 1
    assert stats.bootstrap_mean(values, seed=1) != first  # the seed, not luck, makes it reproducible


def test_bootstrap_interval_matches_the_normal_approximation_on_a_large_sample():
    """The mean of n coin flips: the 95% interval is about ±1.96·sqrt(p(1-p)/n)."""
    values = [1.0] * 600 + [0.0] * 400
    estimate = stats.bootstrap_mean(values, draws=4000)
    half_width = 1.96 * math.sqrt(0.6 * 0.4 / 1000)
    assert estimate.low == pytest.approx(0.6 - half_width, abs=0.006)
    assert estimate.high == pytest.approx(0.6 + half_width, abs=0.006)


def test_bootstrap_of_nothing_says_so():
    assert stats.bootstrap_mean([]) == stats.Estimate(None, None, None, 0)


def test_judge_pair_counts_ties_half_and_averages_samples_within_a_prompt():
    responses = [
        # prompt 1: a wins both samples; prompt 2: a wins one, ties one; prompt 3: a loses (and is 3x longer)
        Response(1, "a", 0, 2.0, 10), Response(1, "b", 0, 1.0, 10), Response(1, "a", 1, 3.0, 10), Response(1, "b", 1, 0.0, 10),
        Response(2, "a", 0, 1.0, 10), Response(2, "b", 0, 0.0, 10), Response(2, "a", 1, 1.0, 10), Response(2, "b", 1, 1.0, 10),
        Response(3, "a", 0, 0.0, 30), Response(3, "b", 0, 1.0, 10),
    ]
    result = stats.judge_pair(responses, "a", "b")
    # per prompt: 1.0, 0.75, 0.0 -> mean 0.5833
    assert result.win_rate.value == pytest.approx((1.0 + 0.75 + 0.0) / 3)
    assert result.win_rate.count == 3
    assert (result.wins, result.ties, result.losses) == (3, 1, 1)
    # prompt 3's lengths differ by 67%: the length-matched win rate leaves it out
    assert result.win_rate_length_matched.value == pytest.approx((1.0 + 0.75) / 2)
    assert result.win_rate_length_matched.count == 2
    assert stats.judge_pair(responses, "b", "a").win_rate.value == pytest.approx(1 - result.win_rate.value)


def test_lengths_within_ten_percent_match():
    assert stats.lengths_match(100, 110) and stats.lengths_match(91, 100)
    assert not stats.lengths_match(100, 112) and not stats.lengths_match(89, 100)


def test_per_prompt_mean_weights_prompts_not_samples():
    responses = [Response(1, "a", 0, 1.0, 4), Response(1, "a", 1, 3.0, 8), Response(2, "a", 0, 5.0, 6), Response(2, "b", 0, 9.0, 6)]
    assert stats.per_prompt_mean(responses, "a", lambda r: r.score).value == pytest.approx((2.0 + 5.0) / 2)
    assert stats.per_prompt_mean(responses, "a", lambda r: r.length).value == pytest.approx((6 + 6) / 2)


def test_bradley_terry_of_three_wins_in_four_is_log10_3_times_400_apart():
    """p(a beats b) = 3/4 at the maximum of the likelihood: odds 3, so 400·log10(3) ≈ 190.8 Elo points apart."""
    fitted = stats.bradley_terry([Comparison("a", "b", 1)] * 3 + [Comparison("a", "b", 0)])
    assert fitted["a"] - fitted["b"] == pytest.approx(400 * math.log10(3), abs=0.5)
    assert (fitted["a"] + fitted["b"]) / 2 == pytest.approx(1000)


def test_a_tie_is_half_a_win_each_way():
    two_wins_two_ties = stats.bradley_terry([Comparison("a", "b", 1)] * 2 + [Comparison("a", "b", 0.5)] * 2)
    assert two_wins_two_ties["a"] - two_wins_two_ties["b"] == pytest.approx(400 * math.log10(3), abs=0.5)
    even = stats.bradley_terry([Comparison("a", "b", 1), Comparison("a", "b", 0.5), Comparison("b", "a", 1), Comparison("a", "b", 0.5)])
    assert even["a"] == pytest.approx(even["b"], abs=1e-6)


def test_bradley_terry_orders_a_hand_made_tournament_and_keeps_an_unbeaten_model_finite():
    """c beats everyone, b beats a 3 to 1, a never wins against c: ordering c > b > a, every rating finite."""
    games = (
        [Comparison("c", "b", 1)] * 3 + [Comparison("c", "a", 1)] * 4
        + [Comparison("b", "a", 1)] * 3 + [Comparison("a", "b", 1)]
    )
    result = stats.ratings(games, draws=200)
    assert [r.model for r in result] == ["c", "b", "a"]
    assert all(math.isfinite(r.rating.value) for r in result)
    assert all(r.rating.low <= r.rating.value <= r.rating.high for r in result)
    by_model = {r.model: r for r in result}
    assert (by_model["b"].wins, by_model["b"].ties, by_model["b"].losses) == (3, 0, 4)
    assert by_model["c"].rating.count == 7
    assert result == stats.ratings(games, draws=200)  # reproducible


def test_bradley_terry_recovers_known_strengths():
    """Outcomes drawn from known Elo ratings come back within a few points when there are many of them."""
    truth = {"a": 1100.0, "b": 1000.0, "c": 900.0}
    rng = np.random.default_rng(0)
    games = []
    for x, y in [("a", "b"), ("b", "c"), ("a", "c")]:
        p = 1 / (1 + 10 ** ((truth[y] - truth[x]) / 400))
        games += [Comparison(x, y, float(win)) for win in rng.random(4000) < p]
    fitted = stats.bradley_terry(games)
    for model, value in truth.items():
        assert fitted[model] == pytest.approx(value, abs=15)


def test_agreement_leaves_out_ties():
    judge = {1: 1.0, 2: 0.0, 3: 1.0, 4: 0.5, 5: 1.0}
    human = {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 0.5, 6: 0.0}
    result = stats.agreement(judge, human)
    assert (result.value, result.count) == (pytest.approx(2 / 3), 3)


def test_wilson_interval_of_a_proportion():
    """8 of 10: Wilson's 95% interval is [0.490, 0.943] (worked by hand from the formula)."""
    estimate = stats.proportion(0.8, 10)
    assert (estimate.value, estimate.count) == (0.8, 10)
    assert estimate.low == pytest.approx(0.4902, abs=1e-3) and estimate.high == pytest.approx(0.9433, abs=1e-3)
    assert stats.proportion(1.0, 3).high == 1.0 and stats.proportion(0.0, 0).value is None
