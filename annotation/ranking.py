"""Rankings as tiers (pure Python): validation, pairs, display order and letters.

A ranking is a list of tiers, best first; each tier holds the ids of responses tied with each other.
``[[4], [3], [1, 2]]`` reads ``D > C > A = B`` when the responses are shown as A=1, B=2, C=3, D=4.

Labelers never see candidate ids (ids are handed out model after model, so their order tells which model wrote a
response). A labeler's name for a response is its letter in that labeler's display order for the item, and a
labeler's ranking is tiers of letters (``[["D"], ["C"], ["A", "B"]]``); ``tiers_from_letters`` is the one translation
to the stored tiers of ids, and ``letter_tiers`` the one translation back.
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
    return _validated(tiers, shown, _is_id, "response ids")


def tiers_from_letters(tiers: object, order: Sequence[int]) -> Tiers:
    """A labeler's ranking in the letters of their display order (``order``, from ``display_order``), checked like
    ``validate_tiers`` and returned as tiers of candidate ids. Anything but those letters is refused, raw ids
    included, so a client written for ids fails loudly instead of ranking the wrong responses."""
    letters = LETTERS[: len(order)]
    by_letter = dict(zip(letters, order))
    checked = _validated(tiers, letters, _is_letter, "letters", raw_ids_refused=True)
    return [[by_letter[letter] for letter in tier] for tier in checked]


def letter_tiers(tiers: Tiers, order: Sequence[int]) -> list[list[str]]:
    """Stored tiers of ids in the letters of one display order, letters sorted within a tier."""
    letters = letters_for(order)
    return [sorted(letters[response] for response in tier) for tier in tiers]


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_letter(value: object) -> bool:
    return isinstance(value, str)


def _validated(tiers: object, shown: Sequence, is_key, what: str, raw_ids_refused: bool = False) -> list[list]:
    if not isinstance(tiers, list) or not tiers:
        raise InvalidRanking(f"A ranking needs at least one tier: a list of lists of {what}, best first.")
    if len(tiers) > len(shown) or sum(len(tier) if isinstance(tier, list) else 1 for tier in tiers) > len(shown):
        raise InvalidRanking(f"This item shows {len(shown)} responses; the ranking places more.")
    normalised: list[list] = []
    for position, tier in enumerate(tiers, start=1):
        if not isinstance(tier, list) or not tier:
            raise InvalidRanking(f"Tier {position} is empty or not a list of {what}.")
        if not all(is_key(response) for response in tier):
            if raw_ids_refused and any(_is_id(response) for response in tier):
                raise InvalidRanking(f"Rank by the letters shown ({_keys(shown)}), not by response ids.")
            raise InvalidRanking(f"Tier {position} holds something other than {what}.")
        normalised.append(list(tier))
    placed = Counter(response for tier in normalised for response in tier)
    problems = []
    if unknown := sorted(set(placed) - set(shown)):
        problems.append(f"not shown in this item: {_keys(unknown)}")
    if repeated := sorted(response for response, times in placed.items() if times > 1):
        problems.append(f"placed more than once: {_keys(repeated)}")
    if missing := [response for response in shown if response not in placed]:
        problems.append(f"not placed: {_keys(missing)}")
    if problems:
        raise InvalidRanking("Every shown response must be placed exactly once; " + "; ".join(problems) + ".")
    return normalised


def _keys(values: Sequence) -> str:
    """At most a few values, each cut short: a refused value comes from the network."""
    shown = [str(value)[:12] for value in values[:8]]
    return ", ".join(shown) + (", ..." if len(values) > 8 else "")


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
