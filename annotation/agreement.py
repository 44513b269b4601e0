"""Inter-annotator agreement on items ranked by more than one labeler (pure Python).

- Pairwise agreement: over the response pairs that two labelers both ordered strictly (ties excluded), the share
  they ordered the same way. This is the measure behind InstructGPT's ~73% inter-labeler agreement.
- Kendall's tau-b between two labelers' rankings of one item (ties handled by tau-b); undefined when one labeler
  tied everything.

Project and labeler figures pool the comparisons of every pair of labelers on every shared item.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from statistics import fmean

Tiers = Sequence[Sequence[int]]


def ranks(tiers: Tiers) -> dict[int, int]:
    return {response: position for position, tier in enumerate(tiers) for response in tier}


@dataclass(frozen=True)
class Comparison:
    """Two labelers on one item."""

    agreed: int  # response pairs both ordered strictly, the same way
    compared: int  # response pairs both ordered strictly
    tau: float | None

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None


def compare(first: Tiers, second: Tiers) -> Comparison:
    a, b = ranks(first), ranks(second)
    responses = sorted(a)
    agreed = compared = concordant = discordant = tied_a = tied_b = 0
    for x, y in combinations(responses, 2):
        sign_a = _sign(a[x] - a[y])
        sign_b = _sign(b[x] - b[y])
        tied_a += sign_a == 0
        tied_b += sign_b == 0
        if sign_a and sign_b:
            compared += 1
            agreed += sign_a == sign_b
            concordant += sign_a == sign_b
            discordant += sign_a != sign_b
    pairs = len(responses) * (len(responses) - 1) // 2
    denominator = math.sqrt((pairs - tied_a) * (pairs - tied_b))
    tau = (concordant - discordant) / denominator if denominator else None
    return Comparison(agreed=agreed, compared=compared, tau=tau)


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


@dataclass
class Agreement:
    agreed: int = 0
    compared: int = 0
    taus: list[float] = field(default_factory=list)
    items: int = 0

    def add(self, comparison: Comparison) -> None:
        self.agreed += comparison.agreed
        self.compared += comparison.compared
        if comparison.tau is not None:
            self.taus.append(comparison.tau)

    @property
    def pairwise(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    @property
    def kendall_tau(self) -> float | None:
        return fmean(self.taus) if self.taus else None

    def as_dict(self) -> dict:
        return {
            "pairwise_agreement": _round(self.pairwise),
            "kendall_tau": _round(self.kendall_tau),
            "pairs_compared": self.compared,
            "items": self.items,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass(frozen=True)
class ItemRankings:
    item_id: int
    by_labeler: dict[int, Tiers]  # labeler id -> tiers


def summarize(items: Iterable[ItemRankings]) -> dict:
    """Agreement per item, for the project, and per labeler (each against the others)."""
    project = Agreement()
    labelers: dict[int, Agreement] = {}
    per_item = []
    for item in items:
        if len(item.by_labeler) < 2:
            continue
        item_agreement = Agreement(items=1)
        seen_labelers = set()
        for (first_id, first), (second_id, second) in combinations(sorted(item.by_labeler.items()), 2):
            comparison = compare(first, second)
            item_agreement.add(comparison)
            project.add(comparison)
            for labeler_id in (first_id, second_id):
                labelers.setdefault(labeler_id, Agreement()).add(comparison)
                seen_labelers.add(labeler_id)
        for labeler_id in seen_labelers:
            labelers[labeler_id].items += 1
        project.items += 1
        per_item.append({"item": item.item_id, "labelers": len(item.by_labeler), **item_agreement.as_dict()})
    return {
        "project": project.as_dict(),
        "labelers": {labeler_id: agreement.as_dict() for labeler_id, agreement in sorted(labelers.items())},
        "items": per_item,
    }
