"""Rankings as tiers (pure Python): validation, pairs, display order and letters.

A ranking is a list of tiers, best first; each tier holds the ids of responses tied with each other.
``[[4], [3], [1, 2]]`` reads ``D > C > A = B`` when the responses are shown as A=1, B=2, C=3, D=4.
"""

from __future__ import annotations

import hashlib
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

Tiers = list[list[int]]
LETTERS = string.ascii_uppercase


class InvalidRanking(ValueError):
    pass


@dataclass(frozen=True)
class DerivedPair:
    chosen: int
    rejected: int
    chosen_rank: int  # 1-based tier
    rejected_rank: int

    @property
    def margin(self) -> int:
        return self.rejected_rank - self.chosen_rank


def validate_tiers(tiers: object, shown: Sequence[int]) -> Tiers:
    """Check that ``tiers`` places every shown response exactly once; return it normalised to lists of ints.

    Linear in the size of the request, and a request placing more responses than were shown is refused before any
    other work: a ranking comes from the network and may be megabytes long."""
    if not isinstance(tiers, list) or not tiers:
        raise InvalidRanking("A ranking needs at least one tier: a list of lists of response ids, best first.")
    if len(tiers) > len(shown) or sum(len(tier) if isinstance(tier, list) else 1 for tier in tiers) > len(shown):
        raise InvalidRanking(f"This item shows {len(shown)} responses; the ranking places more.")
    normalised: Tiers = []
    for position, tier in enumerate(tiers, start=1):
        if not isinstance(tier, list) or not tier:
            raise InvalidRanking(f"Tier {position} is empty or not a list of response ids.")
        if not all(isinstance(response, int) and not isinstance(response, bool) for response in tier):
            raise InvalidRanking(f"Tier {position} holds something other than response ids.")
        normalised.append(list(tier))
    placed = Counter(response for tier in normalised for response in tier)
    expected = set(shown)
    problems = []
    if unknown := sorted(set(placed) - expected):
        problems.append(f"not shown in this item: {_ids(unknown)}")
    if repeated := sorted(response for response, times in placed.items() if times > 1):
        problems.append(f"placed more than once: {_ids(repeated)}")
    if missing := [response for response in shown if response not in placed]:
        problems.append(f"not placed: {_ids(missing)}")
    if problems:
        raise InvalidRanking("Every shown response must be placed exactly once; " + "; ".join(problems) + ".")
    return normalised


def _ids(values: Sequence[int]) -> str:
    return ", ".join(str(value) for value in values)


def derive_pairs(tiers: Tiers) -> list[DerivedPair]:
    """Every (better, worse) pair across tiers; responses tied in a tier give no pair."""
    return [
        DerivedPair(chosen=chosen, rejected=rejected, chosen_rank=better + 1, rejected_rank=worse + 1)
        for better, high in enumerate(tiers)
        for worse in range(better + 1, len(tiers))
        for chosen in high
        for rejected in tiers[worse]
    ]


def display_order(candidate_ids: Sequence[int], *, labeler_id: int, item_id: int) -> list[int]:
    """The order one labeler sees an item's responses in: shuffled per labeler and item, stable on reload, and
    independent of generation order (so position never hints at the model)."""

    def key(candidate_id: int) -> str:
        return hashlib.sha256(f"{labeler_id}:{item_id}:{candidate_id}".encode()).hexdigest()

    return sorted(candidate_ids, key=key)


def letters_for(order: Sequence[int]) -> dict[int, str]:
    return {candidate_id: LETTERS[index] for index, candidate_id in enumerate(order)}


def ranking_text(tiers: Tiers, letters: dict[int, str]) -> str:
    """``D > C > A = B``."""
    return " > ".join(" = ".join(sorted(letters[response] for response in tier)) for tier in tiers)
