"""The statistics of evaluations and the leaderboard (pure Python and numpy: no Django).

Every figure comes with its 95% interval and the count behind it, and every resampling draws from a generator seeded
with ``SEED``, so the same data gives the same figures on every machine.

- Win rates and means are bootstrapped over prompts (the unit that was sampled): each prompt's value is the mean over
  its samples, and a bootstrap draw resamples prompts with replacement. The interval is the percentile interval.
- Ratings are a Bradley–Terry fit by maximum likelihood on pairwise outcomes (1 a win, 0.5 a tie, 0 a loss: a tie is
  half a win each way), on the Elo scale Chatbot Arena uses (400 points = 10:1 odds) centred on 1000, with a tiny
  ridge so that a version that never lost keeps a finite rating. Intervals resample the comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

SEED = 20261201
BOOTSTRAP_DRAWS = 1000
LEVEL = 0.95
ELO_SCALE, ELO_CENTRE = 400.0 / math.log(10.0), 1000.0
RIDGE = 1e-3  # on the natural (log-odds) scale: negligible against a real comparison, finite against none
LENGTH_MATCH = 0.10  # two responses are of matching length when they differ by at most 10% of the longer


@dataclass(frozen=True)
class Estimate:
    """A point estimate, its 95% interval and how many units (prompts, comparisons) it rests on."""

    value: float | None
    low: float | None
    high: float | None
    count: int

    def as_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high, "count": self.count}


EMPTY = Estimate(None, None, None, 0)


def bootstrap_mean(per_unit: Sequence[float], *, draws: int = BOOTSTRAP_DRAWS, seed: int = SEED) -> Estimate:
    """The mean of one value per unit (per prompt), with a percentile bootstrap interval over units."""
    values = np.asarray(per_unit, dtype=float)
    if not len(values):
        return EMPTY
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(draws, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Estimate(float(values.mean()), float(low), float(high), len(values))


def proportion(share: float, count: int) -> Estimate:
    """A share of ``count`` yes/no outcomes (an accuracy) with its Wilson score interval."""
    if not count:
        return EMPTY
    z = 1.959963984540054
    centre = (share + z * z / (2 * count)) / (1 + z * z / count)
    half = z * math.sqrt(share * (1 - share) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return Estimate(float(share), max(0.0, centre - half), min(1.0, centre + half), count)


def outcome(score_a: float, score_b: float) -> float:
    """1 when a scored higher, 0 when b did, 0.5 for a tie."""
    return 1.0 if score_a > score_b else 0.0 if score_a < score_b else 0.5


def lengths_match(length_a: int, length_b: int) -> bool:
    return abs(length_a - length_b) <= LENGTH_MATCH * max(length_a, length_b)


@dataclass(frozen=True)
class Response:
    """One response of an evaluation, as the statistics need it."""

    prompt: Hashable
    model: Hashable
    sample: int
    score: float | None
    length: int


@dataclass(frozen=True)
class PairResult:
    """Judge figures for model ``a`` against model ``b`` over the prompts both answered."""

    a: Hashable
    b: Hashable
    win_rate: Estimate  # a's, ties counted half
    win_rate_length_matched: Estimate  # the same, over the sample pairs whose lengths are within 10%
    wins: int
    ties: int
    losses: int

    def as_dict(self) -> dict:
        return {
            "a": self.a, "b": self.b, "win_rate": self.win_rate.as_dict(),
            "win_rate_length_matched": self.win_rate_length_matched.as_dict(),
            "wins": self.wins, "ties": self.ties, "losses": self.losses,
        }


def judge_pair(responses: Sequence[Response], a: Hashable, b: Hashable) -> PairResult:
    """a against b: sample i of a prompt meets sample i of the same prompt; each prompt's outcome is the mean of its
    meetings, and the interval resamples prompts."""
    meetings = _meetings(responses, a, b)
    all_outcomes = [result for outcomes in meetings.values() for result, _ in outcomes]
    matched = {prompt: [(r, m) for r, m in outcomes if m] for prompt, outcomes in meetings.items()}
    return PairResult(
        a=a, b=b,
        win_rate=bootstrap_mean([np.mean([r for r, _ in outcomes]) for outcomes in meetings.values()]),
        win_rate_length_matched=bootstrap_mean([np.mean([r for r, _ in outcomes]) for outcomes in matched.values() if outcomes]),
        wins=sum(1 for r in all_outcomes if r == 1.0),
        ties=sum(1 for r in all_outcomes if r == 0.5),
        losses=sum(1 for r in all_outcomes if r == 0.0),
    )


def _meetings(responses: Sequence[Response], a: Hashable, b: Hashable) -> dict[Hashable, list[tuple[float, bool]]]:
    """Per prompt, each (outcome for a, lengths match) of a's sample i against b's sample i, scored ones only."""
    by_key = {(r.prompt, r.model, r.sample): r for r in responses if r.score is not None}
    meetings: dict[Hashable, list[tuple[float, bool]]] = {}
    for (prompt, model, sample), mine in sorted(by_key.items(), key=lambda kv: (str(kv[0][0]), kv[0][2])):
        theirs = by_key.get((prompt, b, sample)) if model == a else None
        if theirs is not None:
            meetings.setdefault(prompt, []).append((outcome(mine.score, theirs.score), lengths_match(mine.length, theirs.length)))
    return meetings


def judge_comparisons(responses: Sequence[Response], a: Hashable, b: Hashable) -> list[Comparison]:
    """Every meeting of a's sample i with b's sample i of a prompt, as a comparison for the ratings."""
    return [Comparison(a, b, result) for outcomes in _meetings(responses, a, b).values() for result, _ in outcomes]


def per_prompt_mean(responses: Sequence[Response], model: Hashable, value: Callable[[Response], float | None]) -> Estimate:
    """A model's mean of ``value`` (its reward, its length): the mean over each prompt's samples, bootstrapped over
    prompts."""
    by_prompt: dict[Hashable, list[float]] = {}
    for response in responses:
        if response.model == model and (v := value(response)) is not None:
            by_prompt.setdefault(response.prompt, []).append(v)
    return bootstrap_mean([np.mean(values) for _, values in sorted(by_prompt.items(), key=lambda kv: str(kv[0]))])


# --- Bradley–Terry --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    a: Hashable
    b: Hashable
    outcome: float  # for a: 1 win, 0.5 tie, 0 loss


@dataclass(frozen=True)
class Rating:
    model: Hashable
    rating: Estimate  # Elo scale, centred on 1000; count = comparisons the model took part in
    wins: int
    ties: int
    losses: int

    def as_dict(self) -> dict:
        return {"model": self.model, "rating": self.rating.as_dict(), "wins": self.wins, "ties": self.ties, "losses": self.losses}


def bradley_terry(comparisons: Sequence[Comparison], ridge: float = RIDGE) -> dict[Hashable, float]:
    """Maximum-likelihood strengths on the Elo scale (mean 1000) of every model that took part."""
    table = _Table(comparisons)
    return table.fit(table.counts, ridge)


class _Table:
    """The comparisons grouped by (a, b, outcome): the likelihood depends on nothing else, so a fit is over a few
    rows and a bootstrap draw is a multinomial draw of their counts."""

    def __init__(self, comparisons: Sequence[Comparison]):
        self.models = sorted({c.a for c in comparisons} | {c.b for c in comparisons}, key=str)
        index = {model: i for i, model in enumerate(self.models)}
        grouped: dict[tuple[int, int, float], int] = {}
        for c in comparisons:
            key = (index[c.a], index[c.b], float(c.outcome))
            grouped[key] = grouped.get(key, 0) + 1
        keys = sorted(grouped)
        self.a = np.array([k[0] for k in keys], dtype=int)
        self.b = np.array([k[1] for k in keys], dtype=int)
        self.y = np.array([k[2] for k in keys], dtype=float)
        self.counts = np.array([grouped[k] for k in keys], dtype=float)

    def fit(self, counts: np.ndarray, ridge: float = RIDGE) -> dict[Hashable, float]:
        """Ratings of the models that play in the rows with a count (a model absent from a draw has none)."""
        present = sorted(set(self.a[counts > 0]) | set(self.b[counts > 0]))
        if not present:
            return {}
        local = {model: i for i, model in enumerate(present)}
        keep = counts > 0
        theta = _newton(
            len(present), np.array([local[i] for i in self.a[keep]], dtype=int), np.array([local[i] for i in self.b[keep]], dtype=int),
            self.y[keep], counts[keep], ridge,
        )
        return {self.models[m]: float(ELO_CENTRE + ELO_SCALE * t) for m, t in zip(present, theta, strict=True)}


def _newton(n: int, a: np.ndarray, b: np.ndarray, y: np.ndarray, w: np.ndarray, ridge: float, steps: int = 100) -> np.ndarray:
    """Newton's method on the penalised log-likelihood Σ w·[y·log σ(θa−θb) + (1−y)·log σ(θb−θa)] − ridge/2·|θ|²,
    which is concave, so it converges from zero; the mean is then removed (only differences are identified)."""
    theta = np.zeros(n)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(theta[a] - theta[b])))
        residual = w * (y - p)
        gradient = np.bincount(a, residual, n) - np.bincount(b, residual, n) - ridge * theta
        weight = w * p * (1.0 - p)
        hessian = -ridge * np.eye(n)
        np.add.at(hessian, (a, a), -weight)
        np.add.at(hessian, (b, b), -weight)
        np.add.at(hessian, (a, b), weight)
        np.add.at(hessian, (b, a), weight)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return theta - theta.mean()


def ratings(comparisons: Sequence[Comparison], *, draws: int = BOOTSTRAP_DRAWS, seed: int = SEED) -> list[Rating]:
    """Every model's Bradley–Terry rating with a bootstrap interval over comparisons, best first."""
    table = _Table(comparisons)
    point = table.fit(table.counts)
    rng = np.random.default_rng(seed)
    samples: dict[Hashable, list[float]] = {model: [] for model in point}
    total = int(table.counts.sum())
    for _ in range(draws if total else 0):
        for model, value in table.fit(rng.multinomial(total, table.counts / total).astype(float)).items():
            samples[model].append(value)
    results = []
    for model, value in point.items():
        low, high = np.quantile(samples[model], [(1 - LEVEL) / 2, (1 + LEVEL) / 2]) if samples[model] else (None, None)
        record = _record(comparisons, model)
        results.append(Rating(model, Estimate(value, _float(low), _float(high), sum(record)), *record))
    return sorted(results, key=lambda r: -r.rating.value)


def _record(comparisons: Sequence[Comparison], model: Hashable) -> tuple[int, int, int]:
    """(wins, ties, losses) of a model."""
    outcomes = [c.outcome for c in comparisons if c.a == model] + [1.0 - c.outcome for c in comparisons if c.b == model]
    return sum(o == 1.0 for o in outcomes), sum(o == 0.5 for o in outcomes), sum(o == 0.0 for o in outcomes)


def _float(value) -> float | None:
    return None if value is None else float(value)


def agreement(judge: Mapping[Hashable, float], human: Mapping[Hashable, float]) -> Estimate:
    """How often the judge and the humans preferred the same response, over the comparisons both decided (a human
    tie or a judge tie is not a decision); bootstrapped over those comparisons."""
    shared = sorted((key for key in judge.keys() & human.keys() if judge[key] != 0.5 and human[key] != 0.5), key=str)
    return bootstrap_mean([1.0 if judge[key] == human[key] else 0.0 for key in shared])


# --- online runs: signs of reward hacking ----------------------------------------------------------------------------

MIN_STEPS_FOR_SIGNS = 6  # thirds of at least two steps each
LENGTH_GROWTH = 1.5  # the last third's completions this many times as long as the first third's...
LENGTH_GROWTH_TOKENS = 8  # ...and at least this many tokens longer
CLIPPED_SHARE = 0.5  # most completions cut at the max completion length


def reward_hacking_signs(
    reward: Sequence[float], length: Sequence[float], clipped: Sequence[float], judge_win_rate: Estimate | None = None,
) -> list[str]:
    """Why an online run's rising reward may not mean a better policy, from its logged series (one value per step):
    the reward going up while the completions grow much longer or run into the length limit, or while a judge
    prefers the base on held-out prompts (``judge_win_rate``: the run's policy against its base, 95% interval).
    Compares the first third of the steps with the last; empty when the reward did not rise or nothing is wrong."""
    if len(reward) < MIN_STEPS_FOR_SIGNS:
        return []
    first, last = _thirds(reward)
    if last <= first:
        return []
    rose = f"The reward rose from {first:.3g} to {last:.3g}"
    signs = []
    if len(length) >= MIN_STEPS_FOR_SIGNS:
        short, long = _thirds(length)
        if long >= LENGTH_GROWTH * short and long - short >= LENGTH_GROWTH_TOKENS:
            signs.append(
                f"{rose} while the mean completion grew from {short:.0f} to {long:.0f} tokens: the policy may be earning "
                "reward by writing more. Read the samples; a length penalty or target counters it."
            )
    if len(clipped) >= MIN_STEPS_FOR_SIGNS:
        before, after = _thirds(clipped)
        if after >= CLIPPED_SHARE > before:
            signs.append(
                f"{rose} while the share of completions cut at the max completion length went from {before:.0%} to "
                f"{after:.0%}: longer is being rewarded."
            )
    if judge_win_rate is not None and judge_win_rate.high is not None and judge_win_rate.high < 0.5:
        signs.append(
            f"{rose}, yet on held-out prompts the judge prefers the base: win rate {judge_win_rate.value:.2f} "
            f"[{judge_win_rate.low:.2f}, {judge_win_rate.high:.2f}] over {judge_win_rate.count} prompts. The policy "
            "is exploiting the reward model rather than improving."
        )
    return signs


def _thirds(values: Sequence[float]) -> tuple[float, float]:
    """The means of the first and the last third."""
    third = len(values) // 3
    return float(np.mean(values[:third])), float(np.mean(values[-third:]))
