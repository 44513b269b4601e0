"""Selecting demonstrations (for SFT runs and SFT exports) and splitting them by prompt.

``DemonstrationFilter`` is the one definition of which demonstrations a run trains on or an export holds; forms, the
API and the command line validate their input with ``demonstration_filter_from``. The split by prompt is the pairs'
rule (annotation.pairs.SplitRule): prompts marked held out go to eval, otherwise a fixed share by content hash.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, timedelta

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet

from annotation.models import Demonstration, Project
from annotation.pairs import MAX_EVAL_FRACTION, SplitRule, _day_start, _optional_date, _optional_fraction, split_rule

SOURCES = tuple(Demonstration.Source.values)
EXPORT_FORMATS = ("jsonl", "parquet", "hf")  # SFT exports (raw rankings have no SFT counterpart)
STATUSES = tuple(Demonstration.Status.values)
MAX_JOBS = 100

# How each field reads on the command line and in help texts (forms and the API schema use the same words).
HELP = {
    "sources": "Demonstration sources, each once: written, edited (labelers), import, rejection_sampling.",
    "statuses": "Review statuses, each once: accepted (the default), pending, rejected. Imported and rejection-sampled "
    "demonstrations are accepted when they are made.",
    "rejection_jobs": "Only these rejection-sampling jobs' selections (ids); other sources are not affected.",
    "created_from": "Demonstrations made on or after this day.",
    "created_to": "Demonstrations made on or before this day.",
    "eval_fraction": f"Held-out prompts go to eval; with none marked, this share of the prompts, by content hash (0 to "
    f"below {MAX_EVAL_FRACTION}).",
}


@dataclass(frozen=True)
class DemonstrationFilter:
    sources: tuple[str, ...] = SOURCES
    statuses: tuple[str, ...] = (Demonstration.Status.ACCEPTED,)
    rejection_jobs: tuple[int, ...] = ()
    created_from: date | None = None
    created_to: date | None = None
    eval_fraction: float = 0.1

    def as_dict(self) -> dict:
        return {f.name: _json_value(getattr(self, f.name)) for f in fields(self)}


FILTER_NAMES = tuple(f.name for f in fields(DemonstrationFilter))


def _json_value(value):
    if isinstance(value, tuple):
        return list(value)
    return value.isoformat() if isinstance(value, date) else value


def demonstration_filter_from(data: dict | None) -> DemonstrationFilter:
    """A validated DemonstrationFilter from user input (a form, a JSON body, flags); raises ValidationError naming
    each wrong field."""
    data = data or {}
    default = DemonstrationFilter()
    errors: dict[str, str] = {name: "Unknown filter." for name in sorted(set(data) - set(FILTER_NAMES))}
    sources = _choices(data.get("sources"), default.sources, SOURCES, "sources", errors)
    statuses = _choices(data.get("statuses"), default.statuses, STATUSES, "statuses", errors)
    rejection_jobs = _ids(data.get("rejection_jobs"), errors)
    eval_fraction = _optional_fraction(data.get("eval_fraction"), "eval_fraction", errors)
    if eval_fraction is not None and eval_fraction >= MAX_EVAL_FRACTION:
        errors["eval_fraction"] = f"Keep at least {1 - MAX_EVAL_FRACTION:.0%} of the prompts for training."
    created_from = _optional_date(data.get("created_from"), "created_from", errors)
    created_to = _optional_date(data.get("created_to"), "created_to", errors)
    if created_from and created_to and created_from > created_to:
        errors["created_to"] = "The end date is before the start date."
    if errors:
        raise ValidationError(errors)
    return DemonstrationFilter(
        sources=sources,
        statuses=statuses,
        rejection_jobs=rejection_jobs,
        created_from=created_from,
        created_to=created_to,
        eval_fraction=default.eval_fraction if eval_fraction is None else eval_fraction,
    )


def _choices(value, default: tuple[str, ...], allowed: tuple[str, ...], name: str, errors: dict) -> tuple[str, ...]:
    if value in (None, "", []):
        return default
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        errors[name] = f"Give a list of: {', '.join(allowed)}."
        return default
    if not set(items) <= set(allowed) or len(set(items)) != len(items):
        errors[name] = f"Choose from {', '.join(allowed)}, each once."
        return default
    return tuple(items)


def _ids(value, errors: dict) -> tuple[int, ...]:
    if value in (None, "", []):
        return ()
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    try:
        ids = tuple(sorted({int(item) for item in items if not isinstance(item, bool)}))
    except (TypeError, ValueError):
        errors["rejection_jobs"] = "Give job ids (whole numbers)."
        return ()
    if not isinstance(items, list | tuple | str) or len(ids) > MAX_JOBS or any(i <= 0 for i in ids):
        errors["rejection_jobs"] = f"Give at most {MAX_JOBS} job ids (positive whole numbers)."
        return ()
    return ids


def selected_demonstrations(projects: list[Project], selection: DemonstrationFilter) -> QuerySet[Demonstration]:
    demonstrations = Demonstration.objects.filter(
        project__in=projects, source__in=selection.sources, status__in=selection.statuses
    )
    if selection.rejection_jobs:
        demonstrations = demonstrations.filter(
            ~Q(source=Demonstration.Source.REJECTION_SAMPLING) | Q(rejection_sample__job_id__in=selection.rejection_jobs)
        )
    if selection.created_from:
        demonstrations = demonstrations.filter(created_at__gte=_day_start(selection.created_from))
    if selection.created_to:
        demonstrations = demonstrations.filter(created_at__lt=_day_start(selection.created_to + timedelta(days=1)))
    return demonstrations.order_by("id")


def demonstration_split_rule(demonstrations: QuerySet[Demonstration], eval_fraction: float) -> SplitRule:
    """The pairs' rule over these demonstrations' prompts (see annotation.pairs.SplitRule)."""
    return split_rule(demonstrations, eval_fraction)
