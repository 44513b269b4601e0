"""Selection rules of rejection sampling over a reward matrix, and the figures of its score distribution (pure
Python: no Django, no numpy).

A reward matrix maps each prompt (the caller's key) to its responses' scores, indexed by sample number:
``{prompt: [score of sample 0, score of sample 1, ...]}``. A score of None marks a response no rule may select (the
caller's choice: an empty response, or a repeat of a better one's text); NaN scores are treated the same way.

The three usual rules (``select``):

* ``best-of-n`` - the top response of each prompt (top K per prompt with K = 1);
* ``top-k-per-prompt`` - the K top responses of each prompt (fewer where a prompt has fewer selectable ones);
* ``top-k-overall`` - the K top responses over all prompts together (a prompt may give several, or none).

Ties are broken the same way everywhere, so a selection is a function of the matrix alone: a higher score first,
then the lower prompt key, then the lower sample number. A cell is ``(prompt, sample)``; every rule returns its cells
best first.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Mapping, Sequence

BEST_OF_N, TOP_K_PER_PROMPT, TOP_K_OVERALL = "best-of-n", "top-k-per-prompt", "top-k-overall"
RULES = (BEST_OF_N, TOP_K_PER_PROMPT, TOP_K_OVERALL)
HISTOGRAM_BINS = 20

Matrix = Mapping[int, Sequence[float | None]]
Cell = tuple[int, int]  # (prompt, sample)


def _selectable(score: float | None) -> bool:
    return score is not None and not math.isnan(score)


def _order(matrix: Matrix, prompt: int, sample: int) -> tuple[float, int, int]:
    """The sort key of a cell: higher score first, then lower prompt, then lower sample."""
    return (-matrix[prompt][sample], prompt, sample)


def _cells(matrix: Matrix, prompts: Sequence[int]) -> list[Cell]:
    cells = [(prompt, sample) for prompt in prompts for sample, score in enumerate(matrix[prompt]) if _selectable(score)]
    return sorted(cells, key=lambda cell: _order(matrix, *cell))


def top_k_per_prompt(matrix: Matrix, k: int) -> list[Cell]:
    """The K best responses of every prompt (all of its selectable ones where it has K or fewer)."""
    _check_k(k)
    chosen = [cell for prompt in sorted(matrix) for cell in _cells(matrix, [prompt])[:k]]
    return sorted(chosen, key=lambda cell: _order(matrix, *cell))


def best_of_n(matrix: Matrix) -> list[Cell]:
    """The best response of every prompt that has a selectable one."""
    return top_k_per_prompt(matrix, 1)


def top_k_overall(matrix: Matrix, k: int) -> list[Cell]:
    """The K best responses over all prompts together."""
    _check_k(k)
    return _cells(matrix, sorted(matrix))[:k]


def select(rule: str, matrix: Matrix, k: int = 1) -> list[Cell]:
    """The cells a rule selects, best first (``k`` is ignored by best-of-n)."""
    if rule == BEST_OF_N:
        return best_of_n(matrix)
    if rule == TOP_K_PER_PROMPT:
        return top_k_per_prompt(matrix, k)
    if rule == TOP_K_OVERALL:
        return top_k_overall(matrix, k)
    raise ValueError(f"Unknown selection rule {rule!r}: choose {', '.join(RULES)}.")


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a whole number of at least 1, not {k!r}.")


def best_and_worst(matrix: Matrix) -> dict[int, tuple[int, int]]:
    """Per prompt, its best and its worst selectable response (``(best sample, worst sample)``), in the same order
    as the rules (the worst is the last of that order); only where the best scores strictly above the worst: with
    one selectable response, or all scored alike, the judge preferred nothing."""
    pairs = {}
    for prompt in sorted(matrix):
        cells = _cells(matrix, [prompt])
        if len(cells) >= 2 and matrix[prompt][cells[0][1]] > matrix[prompt][cells[-1][1]]:
            pairs[prompt] = (cells[0][1], cells[-1][1])
    return pairs


# --- figures ----------------------------------------------------------------------------------------------------------


def histogram(values: Sequence[float], selected: Sequence[float] = (), bins: int = HISTOGRAM_BINS) -> dict:
    """Equal-width bins from the lowest to the highest value (one bin when they are all equal): ``edges`` (bins + 1
    numbers), ``counts`` of every value and ``selected`` counts of the selected ones, bin by bin. A value on an inner
    edge goes to the bin above it; the highest value to the last bin."""
    if not values:
        return {"edges": [], "counts": [], "selected": []}
    low, high = min(values), max(values)
    if low == high:
        bins = 1
    width = (high - low) / bins if high > low else 1.0
    edges = [low + width * index for index in range(bins)] + [high if high > low else low + width]

    def counts(numbers: Sequence[float]) -> list[int]:
        tally = [0] * bins
        for value in numbers:
            tally[min(bins - 1, max(0, int((value - low) / width)))] += 1
        return tally

    return {"edges": edges, "counts": counts(values), "selected": counts(selected)}


def _describe(values: Sequence[float]) -> dict:
    if not values:
        return {"count": 0, "mean": None, "std": None, "min": None, "max": None}
    return {
        "count": len(values), "mean": statistics.fmean(values), "std": statistics.pstdev(values),
        "min": min(values), "max": max(values),
    }


def summary(matrix: Matrix, selected: Collection[Cell], bins: int = HISTOGRAM_BINS) -> dict:
    """What a rejection-sampling job reports: the distribution of every score (count, mean, population std, min,
    max and a histogram with the selected responses' share of each bin), each prompt's spread (its highest score
    minus its lowest: how much choosing among its responses can gain), and the selected responses' mean score beside
    the mean of all (``gain`` is the difference)."""
    scores = [score for row in matrix.values() for score in row if _selectable(score)]
    picked = [matrix[prompt][sample] for prompt, sample in selected]
    spreads = [
        max(row_scores) - min(row_scores)
        for row_scores in ([score for score in row if _selectable(score)] for row in matrix.values())
        if row_scores
    ]
    everything, chosen = _describe(scores), _describe(picked)
    return {
        "scores": {**everything, "histogram": histogram(scores, picked, bins)},
        "per_prompt_spread": {**_describe(spreads), "median": statistics.median(spreads) if spreads else None},
        "selected": {"count": chosen["count"], "mean": chosen["mean"], "min": chosen["min"], "max": chosen["max"]},
        "gain": chosen["mean"] - everything["mean"] if chosen["count"] and everything["count"] else None,
    }
