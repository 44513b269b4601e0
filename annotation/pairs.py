"""Selecting preference pairs (for training runs and exports) and splitting them by prompt.

``PairFilter`` is the one definition of the pair filter: its fields' types, defaults and metadata (help text, the
command-line flag) are what the forms (annotation/forms.py), the API schema (annotation/api/serializers.py), the pairs
list's query parameters (annotation/api/data.py) and the command-line flags (annotation/pair_filter_cli.py) are built
from. ``pair_filter_from`` validates user input from any of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import date, datetime, time, timedelta

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.utils import timezone

from annotation.models import Demonstration, PreferencePair, Project, Prompt, RankingItem
from annotation.selectors import item_agreement

SOURCES = tuple(PreferencePair.Source.values)
# Pairs a reward model chose stay out of training and exports unless a filter names them.
DEFAULT_SOURCES = tuple(source for source in SOURCES if source != PreferencePair.Source.JUDGE)
MAX_EVAL_FRACTION = 0.9  # exclusive: at least 10% of the prompts stay for training


def _policy_version_choices() -> list[tuple[str, str]]:
    from generation.models import ModelVersion

    names = ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY).order_by("name").values_list("name", flat=True)
    return [(name, name) for name in names]


def _option(default, help: str, *, flag: str, **extra):
    """A PairFilter field; its metadata becomes a FilterOption (below)."""
    return field(default=default, metadata={"help": help, "flag": flag, **extra})


@dataclass(frozen=True)
class PairFilter:
    """Which pairs a run trains on or an export holds. Dates are inclusive; ``min_agreement`` keeps human pairs only from items that
    two or more labelers ranked with at least that pairwise agreement (imported pairs have no labelers and are kept)."""

    sources: tuple[str, ...] = _option(
        DEFAULT_SOURCES, "Pair sources, each once (edit: a labeler's edit over the response it rewrote, left out once an admin rejects the "
        "edit; judge: pairs a reward model chose in rejection sampling).", flag="--source",
        choices=tuple(PreferencePair.Source.choices)
    )
    exclude_flagged: bool = _option(
        True, "Leave out the pairs of flagged and retired items.", flag="--include-flagged",
        label="Leave out flagged and retired items",
    )
    include_evaluation: bool = _option(
        True, "Keep the pairs labelers gave on blind comparisons sent from evaluations.", flag="--exclude-evaluation",
        label="Keep pairs from blind evaluation comparisons",
    )
    min_agreement: float | None = _option(
        None, "Only human pairs of items ranked by two or more labelers who agree at least this much (0 to 1); "
        "pairs of other sources are kept.", flag="--min-agreement",
    )
    created_from: date | None = _option(None, "Pairs created on or after this day.", flag="--from")
    created_to: date | None = _option(None, "Pairs created on or before this day.", flag="--to")
    model_versions: tuple[str, ...] = _option(
        (), "Only pairs whose two responses come from these model versions.", flag="--model-version",
        choices=_policy_version_choices,
    )
    eval_fraction: float = _option(
        0.1, f"Held-out prompts go to eval; with none marked, this share of the prompts, by content hash (0 to below "
        f"{MAX_EVAL_FRACTION}).", flag="--eval-fraction", maximum=MAX_EVAL_FRACTION, selects=False,
    )

    def as_dict(self) -> dict:
        """Every field, JSON-ready."""
        return {f.name: _json_value(getattr(self, f.name)) for f in fields(self)}


def _json_value(value):
    if isinstance(value, tuple):
        return list(value)
    return value.isoformat() if isinstance(value, date) else value


@dataclass(frozen=True)
class FilterOption:
    """One PairFilter field as a form, the API and the command line need it: its name, ``kind`` (from its type:
    names, a list of strings; bool; fraction, a number from 0 to ``maximum``; date), default and metadata: ``help``,
    ``flag`` (on the command line), ``choices`` (pairs, or a callable giving them where they live in the database),
    ``label`` (in forms) and ``selects`` (False for a setting that splits the selected pairs, not chooses them)."""

    name: str
    kind: str
    default: object
    help: str
    flag: str
    choices: tuple[tuple[str, str], ...] | Callable[[], list[tuple[str, str]]] = ()
    maximum: float = 1
    label: str = ""
    selects: bool = True

    @property
    def description(self) -> str:
        """The help text and the default, for the API and the command line."""
        if self.default is None:
            return self.help
        if self.kind == "names":
            default = ", ".join(self.default) or "any"
        else:
            default = str(self.default).lower()
        return f"{self.help} Default: {default}."


_KINDS = {"tuple[str, ...]": "names", "bool": "bool", "float | None": "fraction", "float": "fraction", "date | None": "date"}
FILTER_OPTIONS = tuple(
    FilterOption(name=f.name, kind=_KINDS[f.type], default=f.default, **f.metadata) for f in fields(PairFilter)
)
FILTER_NAMES = tuple(option.name for option in FILTER_OPTIONS)


def pair_filter_from(data: dict | None) -> PairFilter:
    """A validated PairFilter from user input; raises ValidationError naming the fields."""
    data = data or {}
    default = PairFilter()
    errors: dict[str, str] = {name: "Unknown filter." for name in sorted(set(data) - set(FILTER_NAMES))}
    sources = tuple(data.get("sources") or default.sources)
    if not set(sources) <= set(SOURCES) or len(set(sources)) != len(sources):
        errors["sources"] = f"Choose from {', '.join(SOURCES)}."
    min_agreement = _optional_fraction(data.get("min_agreement"), "min_agreement", errors)
    eval_fraction = _optional_fraction(data.get("eval_fraction"), "eval_fraction", errors)
    if eval_fraction is not None and eval_fraction >= MAX_EVAL_FRACTION:
        errors["eval_fraction"] = f"Keep at least {1 - MAX_EVAL_FRACTION:.0%} of the prompts for training."
    created_from = _optional_date(data.get("created_from"), "created_from", errors)
    created_to = _optional_date(data.get("created_to"), "created_to", errors)
    if created_from and created_to and created_from > created_to:
        errors["created_to"] = "The end date is before the start date."
    model_versions = _model_versions(data.get("model_versions"), errors)
    exclude_flagged, include_evaluation = (data.get(name, getattr(default, name)) for name in ("exclude_flagged", "include_evaluation"))
    for name, value in (("exclude_flagged", exclude_flagged), ("include_evaluation", include_evaluation)):
        if not isinstance(value, bool):
            errors[name] = "Use true or false."
    if errors:
        raise ValidationError(errors)
    return PairFilter(
        sources=sources,
        exclude_flagged=exclude_flagged,
        include_evaluation=include_evaluation,
        min_agreement=min_agreement,
        created_from=created_from,
        created_to=created_to,
        model_versions=model_versions,
        eval_fraction=default.eval_fraction if eval_fraction is None else eval_fraction,
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


def _model_versions(value, errors: dict) -> tuple[str, ...]:
    from generation.models import ModelVersion

    if value in (None, "", []):
        return ()
    names = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(name, str) for name in names):
        errors["model_versions"] = "Give a list of model version names."
        return ()
    unknown = sorted(set(names) - set(ModelVersion.objects.filter(name__in=names).values_list("name", flat=True)))
    if unknown:
        errors["model_versions"] = f"Unknown model version: {', '.join(unknown)}."
    return tuple(sorted(set(names)))


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
    # An edit an admin rejected says nothing about what labelers prefer: its pair "edited > original" stays out.
    pairs = pairs.exclude(source=PreferencePair.Source.EDIT, demonstration__status=Demonstration.Status.REJECTED)
    if pair_filter.exclude_flagged:
        unrankable = [RankingItem.Status.FLAGGED, RankingItem.Status.RETIRED]
        pairs = pairs.exclude(ranking__item__status__in=unrankable).exclude(demonstration__ranking__item__status__in=unrankable)
    if not pair_filter.include_evaluation:
        pairs = pairs.exclude(ranking__item__origin=RankingItem.Origin.EVALUATION)
    if pair_filter.created_from:
        pairs = pairs.filter(created_at__gte=_day_start(pair_filter.created_from))
    if pair_filter.created_to:
        pairs = pairs.filter(created_at__lt=_day_start(pair_filter.created_to + timedelta(days=1)))
    if pair_filter.model_versions:
        pairs = pairs.filter(
            chosen__model_version__name__in=pair_filter.model_versions,
            rejected__model_version__name__in=pair_filter.model_versions,
        )
    if pair_filter.min_agreement is not None:
        agreed = [item for item, value in item_agreement(projects).items() if value is not None and value >= pair_filter.min_agreement]
        pairs = pairs.filter(~Q(source=PreferencePair.Source.HUMAN) | Q(ranking__item_id__in=agreed))
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
        return held_out_by_hash(prompt_hash, self.eval_fraction)

    @property
    def description(self) -> str:
        return "prompts marked held-out" if self.marked else f"{self.eval_fraction:.0%} of prompts by content hash"


def split_rule(pairs: QuerySet[PreferencePair], eval_fraction: float) -> SplitRule:
    return SplitRule(marked=pairs.filter(prompt__split=Prompt.Split.HELDOUT).exists(), eval_fraction=eval_fraction)


def split_rule_description(eval_fraction: float) -> str:
    """Both ways of the rule, for when the selected pairs are not looked at (a dataset card)."""
    marked, by_hash = (SplitRule(marked=m, eval_fraction=eval_fraction).description for m in (True, False))
    return f"{marked} (or {by_hash} when none is marked)"


def held_out_by_hash(prompt_hash: str, fraction: float) -> bool:
    """Whether a prompt falls in the held-out ``fraction`` by its content hash (sha256 hex): its first 32 bits as a
    share of 2**32. The same prompts every time, whatever else is selected."""
    return int(prompt_hash[:8], 16) / 0x100000000 < fraction
