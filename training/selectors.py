"""Reads for training: which pairs a run uses (and how they split), run progress, charts and reward accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.utils import timezone

from annotation.models import PreferencePair, Project, Prompt, RankingItem
from annotation.selectors import item_agreement
from training.models import CandidateScore, TrainingMetric, TrainingRun, TrainingRunPair
from training.trainers.data import PreferenceExample

SOURCES = tuple(PreferencePair.Source.values)
DEFAULT_EVAL_FRACTION = 0.1


@dataclass(frozen=True)
class PairFilter:
    """Which pairs a run trains on. Dates are inclusive; ``min_agreement`` keeps human pairs only from items that
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


def training_pairs(projects: list[Project], pair_filter: PairFilter) -> QuerySet[PreferencePair]:
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
class SplitExamples:
    train: list[PreferenceExample]
    eval: list[PreferenceExample]
    eval_rule: str
    prompts: dict[str, int]  # distinct prompts per split


def split_examples(pairs: QuerySet[PreferencePair], eval_fraction: float) -> SplitExamples:
    """Train and eval examples, split by prompt: the prompts marked held-out when the selection has any, otherwise a
    fixed fraction of the prompts chosen by their content hash (the same prompts every time)."""
    rows = list(
        pairs.values_list("pk", "prompt_id", "prompt__messages", "prompt__split", "prompt__content_hash", "chosen__text", "rejected__text", "margin")
    )
    marked = {row[1] for row in rows if row[3] == Prompt.Split.HELDOUT}
    if marked:
        eval_prompts, rule = marked, "prompts marked held-out"
    else:
        eval_prompts = {row[1] for row in rows if _hash_fraction(row[4]) < eval_fraction}
        rule = f"{eval_fraction:.0%} of prompts by content hash"
    split: dict[str, list[PreferenceExample]] = {"train": [], "eval": []}
    for pk, prompt_id, messages, _, _, chosen, rejected, margin in rows:
        example = PreferenceExample(pair_id=pk, prompt=messages, chosen=chosen, rejected=rejected, margin=margin)
        split["eval" if prompt_id in eval_prompts else "train"].append(example)
    all_prompts = {row[1] for row in rows}
    prompts = {"train": len(all_prompts - eval_prompts), "eval": len(all_prompts & eval_prompts)}
    return SplitExamples(train=split["train"], eval=split["eval"], eval_rule=rule, prompts=prompts)


def _hash_fraction(content_hash: str) -> float:
    return int(content_hash[:8], 16) / 0x100000000


# --- runs: progress and charts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunProgress:
    percent: int
    elapsed_seconds: float
    eta_seconds: float | None
    seconds_per_step: float | None

    def as_dict(self) -> dict:
        return {
            "percent": self.percent,
            "elapsed_seconds": round(self.elapsed_seconds, 1),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds),
            "seconds_per_step": None if self.seconds_per_step is None else round(self.seconds_per_step, 2),
        }


def run_progress(run: TrainingRun) -> RunProgress:
    end = run.finished_at or timezone.now()
    elapsed = (end - run.started_at).total_seconds() if run.started_at else 0.0
    percent = int(100 * run.step / run.total_steps) if run.total_steps else 0
    per_step = eta = None
    if run.training_started_at and run.step:
        # Loading the model is left out: the rate is the training's own.
        per_step = (end - run.training_started_at).total_seconds() / run.step
        if run.status == TrainingRun.Status.RUNNING:
            eta = per_step * max(0, run.total_steps - run.step)
    return RunProgress(percent=percent, elapsed_seconds=elapsed, eta_seconds=eta, seconds_per_step=per_step)


CHARTS = {
    TrainingRun.Kind.DPO: ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"],
    TrainingRun.Kind.REWARD: ["loss", "accuracy", "margin", "mean_reward"],
}


def run_series(runs: list[TrainingRun]) -> dict[str, dict[tuple[int, str], list[tuple[int, float]]]]:
    """metric name -> (run id, split) -> [(step, value), ...]: the data of the run charts."""
    series: dict[str, dict[tuple[int, str], list[tuple[int, float]]]] = {}
    rows = TrainingMetric.objects.filter(run__in=runs).order_by("run_id", "step", "id")
    for run_id, step, split, name, value in rows.values_list("run_id", "step", "split", "name", "value"):
        series.setdefault(name, {}).setdefault((run_id, split), []).append((step, value))
    return series


def runs_with_versions() -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related("base_version", "model_version", "requested_by").prefetch_related("projects")


# --- reward models --------------------------------------------------------------------------------------------------


def reward_accuracy(version, project: Project) -> dict:
    """How often the reward model scores the chosen response above the rejected one, over the project's human pairs
    it did not train on (both responses scored)."""
    scores = dict(CandidateScore.objects.filter(reward_version=version, candidate__prompt__project=project).values_list("candidate_id", "score"))
    pairs = PreferencePair.objects.filter(project=project, source=PreferencePair.Source.HUMAN)
    run = getattr(version, "training_run", None)
    if run is not None:
        trained = TrainingRunPair.objects.filter(run=run, split=TrainingRunPair.Split.TRAIN).values("pair_id")
        pairs = pairs.exclude(pk__in=trained)
    correct = total = 0
    for chosen, rejected in pairs.values_list("chosen_id", "rejected_id"):
        if chosen in scores and rejected in scores:
            total += 1
            correct += scores[chosen] > scores[rejected]
    return {"pairs": total, "correct": correct, "accuracy": round(correct / total, 4) if total else None}


def run_headline(run: TrainingRun) -> dict:
    """The figures a run list shows: pairs used and the final evaluation (runs that registered a model)."""
    version = getattr(run, "model_version", None)
    final = version.metrics.get("eval", {}) if version is not None else {}
    return {
        "train_pairs": run.dataset_manifest.get("pairs", {}).get("train"),
        "eval_pairs": run.dataset_manifest.get("pairs", {}).get("eval"),
        "eval_loss": final.get("loss"),
        "eval_accuracy": final.get("rewards/accuracies", final.get("accuracy")),
        "samples_per_second": run.summary.get("train_samples_per_second"),
    }


def settings_table(runs: list[TrainingRun]) -> list[tuple[str, list, bool]]:
    """(setting, value per run, whether the runs differ) for every setting any of the runs has."""
    names = sorted({name for run in runs for name in run.config})
    rows = []
    for name in names:
        values = [run.config.get(name) for run in runs]
        rows.append((name, [_display(name, value) for value in values], len({repr(value) for value in values}) > 1))
    return rows


def reward_models_for(project: Project) -> list[dict]:
    """Every reward model with its scores on this project and its accuracy on the held-out human pairs."""
    from generation.models import ModelVersion

    rows = []
    for version in ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD).select_related("training_run").order_by("-created_at"):
        scored = CandidateScore.objects.filter(reward_version=version, candidate__prompt__project=project).count()
        rows.append({"version": version, "scored": scored, "accuracy": reward_accuracy(version, project) if scored else None})
    return rows


def settings_display(values: dict) -> list[tuple[str, str]]:
    """Settings or filters as (name, text) rows: lists joined, None as "auto" or "—", booleans as on/off."""
    return [(name, _display(name, value)) for name, value in values.items()]


def _display(name: str, value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "auto" if name in ("bf16", "gradient_checkpointing") else "—"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)
