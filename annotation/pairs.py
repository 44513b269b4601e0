"""Selecting preference pairs (for training runs and exports) and splitting them by prompt."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.utils import timezone

from annotation.models import PreferencePair, Project, Prompt, RankingItem
from annotation.selectors import item_agreement

SOURCES = tuple(PreferencePair.Source.values)
DEFAULT_EVAL_FRACTION = 0.1


@dataclass(frozen=True)
class PairFilter:
    """Which pairs a run trains on or an export holds. Dates are inclusive; ``min_agreement`` keeps human pairs only from items that
    two or more labelers ranked with at least that pairwise agreement (imported pairs have no labelers and are kept)."""

    sources: tuple[str, ...] = SOURCES
    exclude_flagged: bool = True
    min_agreement: float | None = None
    created_from: date | None = None
    created_to: date | None = None
    eval_fraction: float = DEFAULT_EVAL_FRACTION

    def as_dict(self) -> dict:
        return {
            "sources": list(self.sources),
            "exclude_flagged": self.exclude_flagged,
            "min_agreement": self.min_agreement,
            "created_from": self.created_from.isoformat() if self.created_from else None,
            "created_to": self.created_to.isoformat() if self.created_to else None,
            "eval_fraction": self.eval_fraction,
        }


FILTER_NAMES = ("sources", "exclude_flagged", "min_agreement", "created_from", "created_to", "eval_fraction")


def pair_filter_from(data: dict | None) -> PairFilter:
    """A validated PairFilter from user input; raises ValidationError naming the fields."""
    data = data or {}
    errors: dict[str, str] = {name: "Unknown filter." for name in sorted(set(data) - set(FILTER_NAMES))}
    sources = tuple(data.get("sources") or SOURCES)
    if not set(sources) <= set(SOURCES) or len(set(sources)) != len(sources):
        errors["sources"] = f"Choose from {', '.join(SOURCES)}."
    min_agreement = _optional_fraction(data.get("min_agreement"), "min_agreement", errors)
    eval_fraction = _optional_fraction(data.get("eval_fraction"), "eval_fraction", errors)
    if eval_fraction is not None and eval_fraction >= 0.9:
        errors["eval_fraction"] = "Keep at least 10% of the prompts for training."
    created_from = _optional_date(data.get("created_from"), "created_from", errors)
    created_to = _optional_date(data.get("created_to"), "created_to", errors)
    if created_from and created_to and created_from > created_to:
        errors["created_to"] = "The end date is before the start date."
    exclude_flagged = data.get("exclude_flagged", True)
    if not isinstance(exclude_flagged, bool):
        errors["exclude_flagged"] = "Use true or false."
    if errors:
        raise ValidationError(errors)
    return PairFilter(
        sources=sources,
        exclude_flagged=exclude_flagged,
        min_agreement=min_agreement,
        created_from=created_from,
        created_to=created_to,
        eval_fraction=DEFAULT_EVAL_FRACTION if eval_fraction is None else eval_fraction,
    )


def _optional_fraction(value, name: str, errors: dict) -> float | None:
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not 0 <= number <= 1:
        errors[name] = "Give a number between 0 and 1."
        return None
    return number


def _optional_date(value, name: str, errors: dict) -> date | None:
    if value in (None, ""):
        return None
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        errors[name] = "Give a date as YYYY-MM-DD."
        return None


def selected_pairs(projects: list[Project], pair_filter: PairFilter) -> QuerySet[PreferencePair]:
    pairs = PreferencePair.objects.filter(project__in=projects, source__in=pair_filter.sources)
    if pair_filter.exclude_flagged:
        pairs = pairs.exclude(ranking__item__status__in=[RankingItem.Status.FLAGGED, RankingItem.Status.RETIRED])
    if pair_filter.created_from:
        pairs = pairs.filter(created_at__gte=_day_start(pair_filter.created_from))
    if pair_filter.created_to:
        pairs = pairs.filter(created_at__lt=_day_start(pair_filter.created_to + timedelta(days=1)))
    if pair_filter.min_agreement is not None:
        agreed = [item for item, value in item_agreement(projects).items() if value is not None and value >= pair_filter.min_agreement]
        pairs = pairs.filter(Q(source=PreferencePair.Source.IMPORT) | Q(ranking__item_id__in=agreed))
    return pairs.order_by("id")


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


@dataclass(frozen=True)
class SplitRule:
    """Which prompts are held out: the prompts marked held-out when the selection has any, otherwise a fixed
    fraction of the prompts chosen by their content hash (the same prompts every time, whatever else is selected)."""

    marked: bool
    eval_fraction: float

    def is_heldout(self, prompt_split: str, prompt_hash: str) -> bool:
        if self.marked:
            return prompt_split == Prompt.Split.HELDOUT
        return int(prompt_hash[:8], 16) / 0x100000000 < self.eval_fraction

    @property
    def description(self) -> str:
        return "prompts marked held-out" if self.marked else f"{self.eval_fraction:.0%} of prompts by content hash"


def split_rule(pairs: QuerySet[PreferencePair], eval_fraction: float) -> SplitRule:
    return SplitRule(marked=pairs.filter(prompt__split=Prompt.Split.HELDOUT).exists(), eval_fraction=eval_fraction)
