"""Reads for training: a run's examples, progress, charts, comparisons and reward accuracy."""

from __future__ import annotations

from dataclasses import dataclass, field
from django.db.models import QuerySet

from annotation.demonstrations import demonstration_split_rule
from annotation.models import Demonstration, PreferencePair, Project
from config.job_queue import job_progress
from annotation.pairs import split_rule
from training import stats
from training.models import CandidateScore, TrainingMetric, TrainingRun, TrainingRunPair
from training.trainers.data import PreferenceExample, SFTExample

@dataclass(frozen=True)
class SplitExamples:
    train: list[PreferenceExample]
    eval: list[PreferenceExample]
    eval_rule: str
    prompts: dict[str, int]  # distinct prompts per split


def split_examples(pairs: QuerySet[PreferencePair], eval_fraction: float) -> SplitExamples:
    """Train and eval examples, split by prompt (see annotation.pairs.split_rule)."""
    rule = split_rule(pairs, eval_fraction)
    rows = pairs.values_list(
        "pk", "prompt_id", "prompt__messages", "prompt__split", "prompt__content_hash", "chosen__text", "rejected__text", "margin"
    )
    split: dict[str, list[PreferenceExample]] = {"train": [], "eval": []}
    prompts: dict[str, set[int]] = {"train": set(), "eval": set()}
    for pk, prompt_id, messages, prompt_split, prompt_hash, chosen, rejected, margin in rows:
        name = "eval" if rule.is_heldout(prompt_split, prompt_hash) else "train"
        split[name].append(PreferenceExample(pair_id=pk, prompt=messages, chosen=chosen, rejected=rejected, margin=margin))
        prompts[name].add(prompt_id)
    return SplitExamples(
        train=split["train"], eval=split["eval"], eval_rule=rule.description, prompts={k: len(v) for k, v in prompts.items()}
    )


@dataclass(frozen=True)
class SplitDemonstrations:
    """An SFT run's demonstrations split by prompt, with where they come from."""

    train: list[SFTExample]
    eval: list[SFTExample]
    eval_rule: str
    prompts: dict[str, int]  # distinct prompts per split
    sources: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> source -> demonstrations
    rejection_jobs: dict[int, int] = field(default_factory=dict)  # rejection-sampling job id -> demonstrations


def split_demonstrations(demonstrations: QuerySet[Demonstration], eval_fraction: float) -> SplitDemonstrations:
    """Train and eval demonstrations, split by prompt with the pairs' rule (annotation.demonstrations)."""
    rule = demonstration_split_rule(demonstrations, eval_fraction)
    rows = demonstrations.values_list(
        "pk", "prompt_id", "prompt__messages", "prompt__split", "prompt__content_hash", "text", "source", "rejection_sample__job_id"
    )
    split: dict[str, list[SFTExample]] = {"train": [], "eval": []}
    prompts: dict[str, set[int]] = {"train": set(), "eval": set()}
    sources: dict[str, dict[str, int]] = {"train": {}, "eval": {}}
    jobs: dict[int, int] = {}
    for pk, prompt_id, messages, prompt_split, prompt_hash, text, source, job_id in rows:
        name = "eval" if rule.is_heldout(prompt_split, prompt_hash) else "train"
        split[name].append(SFTExample(demonstration_id=pk, prompt=messages, completion=text))
        prompts[name].add(prompt_id)
        sources[name][source] = sources[name].get(source, 0) + 1
        if job_id is not None:
            jobs[job_id] = jobs.get(job_id, 0) + 1
    return SplitDemonstrations(
        train=split["train"], eval=split["eval"], eval_rule=rule.description, prompts={k: len(v) for k, v in prompts.items()},
        sources={name: dict(sorted(counts.items())) for name, counts in sources.items()}, rejection_jobs=dict(sorted(jobs.items())),
    )


# --- runs: progress and charts -------------------------------------------------------------------------------------


def run_progress(run: TrainingRun) -> dict:
    """The shared progress figures plus seconds per step (loading the model left out: the training's own rate)."""
    progress = job_progress(run)
    per_step = 1 / progress.per_second if progress.per_second else None
    return {**progress.as_dict(), "seconds_per_step": None if per_step is None else round(per_step, 2)}


CHARTS = {
    TrainingRun.Kind.DPO: ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"],
    TrainingRun.Kind.REWARD: ["loss", "accuracy", "margin", "mean_reward"],
    # TRL's SFTTrainer also logs entropy and num_tokens (kept with the metrics, not charted).
    TrainingRun.Kind.SFT: ["loss", "mean_token_accuracy"],
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
    selected = run.selected_examples
    return {
        "unit": run.trains_on,  # "pairs", or "demonstrations" for an SFT run (the *_pairs figures below count them)
        "train_pairs": selected.get("train"),  # selected at launch
        "eval_pairs": selected.get("eval"),
        "pairs_used": run.pairs_used_known,  # below: what the trainer used, once it was built
        "train_pairs_used": run.train_pairs_used,
        "eval_pairs_used": run.eval_pairs_used,
        "pairs_truncated": run.pairs_truncated,
        "pairs_dropped": run.pairs_dropped,
        "eval_loss": final.get("loss"),
        "eval_accuracy": heldout_accuracy(version) if version is not None else None,
        "samples_per_second": run.summary.get("train_samples_per_second"),
    }


def heldout_accuracy(version) -> stats.Estimate | None:
    """The held-out preference accuracy of the run that made a version, with its Wilson interval and the pairs it rests
    on (reward runs: the reward model's; DPO runs: the implicit reward β·log π/π_ref of chosen above rejected); None
    without one."""
    final = version.metrics.get("eval", {})
    value = final.get("rewards/accuracies", final.get("accuracy"))
    run = version.training_run
    if value is None or run is None:
        return None
    return stats.proportion(value, run.eval_pairs_used or 0)


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


# --- the launch form: which base to offer ---------------------------------------------------------------------------


def default_base(project: Project | None = None):
    """The base the launch form preselects: the last base a run of this project trained on, else the default model,
    else the oldest registered base model. Never simply the newest version, which after a DPO round is that policy."""
    from generation.models import ModelVersion
    from generation.services import default_model_name

    policies = ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY)
    if project is not None:
        last = TrainingRun.objects.filter(projects=project, base_version__kind=ModelVersion.Kind.POLICY).order_by("-created_at").first()
        if last is not None:
            return last.base_version
    return (
        policies.filter(name=default_model_name()).first()
        or policies.filter(parent__isnull=True, training_run__isnull=True).order_by("created_at").first()
        or policies.order_by("created_at").first()
    )


def lineage(version) -> list[dict]:
    """The version, its parent, its parent's parent... down to the base model: what a run on it builds on."""
    rows, seen = [], set()
    while version is not None and version.pk not in seen:
        seen.add(version.pk)
        run = version.training_run if version.training_run_id else None
        rows.append({
            "name": version.name,
            "made_by": f"{run.get_kind_display()} run {run.pk}" if run else ("adapter" if version.adapter_path else "base model"),
            "base_model": version.base_model,
        })
        version = version.parent
    return rows
