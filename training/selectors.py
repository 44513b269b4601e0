"""Reads for training: a run's examples, progress, charts, comparisons and reward accuracy."""

from __future__ import annotations

from dataclasses import dataclass, field
from django.db.models import QuerySet

from annotation.demonstrations import demonstration_split_rule
from django.core.exceptions import ValidationError

from annotation.models import Demonstration, PreferencePair, Project, Prompt
from config.job_queue import job_progress
from annotation.pairs import split_rule
from training import stats
from training.models import CandidateScore, TrainingMetric, TrainingRun, TrainingRunPair, TrainingSample
from training.trainers.data import PreferenceExample, PromptExample, SFTExample

# The most prompts an online run takes (a query takes only so many ids, and a run over more is not a CPU's job).
MAX_RUN_PROMPTS = 10_000

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


@dataclass(frozen=True)
class PromptSelection:
    """The prompts of a GRPO or RLOO run: the projects' train split (``mode="train"``) or the prompts listed."""

    mode: str = "train"
    ids: tuple[int, ...] = ()

    def as_dict(self) -> dict:
        return {"mode": self.mode, "ids": list(self.ids)} if self.mode == "ids" else {"mode": self.mode}


def prompt_selection_from(data: dict | None) -> PromptSelection:
    """{"mode": "train"} (the default) or {"mode": "ids", "ids": [...]}; anything else is a ValidationError."""
    data = data or {"mode": "train"}
    mode = data.get("mode") if isinstance(data, dict) else None
    if mode == "train" and set(data) <= {"mode"}:
        return PromptSelection()
    if mode == "ids" and set(data) <= {"mode", "ids"}:
        ids = data.get("ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids):
            raise ValidationError({"prompt_selection": "ids must be a non-empty list of prompt ids."})
        if len(ids) > MAX_RUN_PROMPTS:
            raise ValidationError({"prompt_selection": f"At most {MAX_RUN_PROMPTS:,} prompts per run (got {len(ids):,})."})
        return PromptSelection(mode="ids", ids=tuple(sorted(set(ids))))
    raise ValidationError({"prompt_selection": 'Give {"mode": "train"} or {"mode": "ids", "ids": [...]}.'})


@dataclass(frozen=True)
class SplitPrompts:
    """An online run's prompts. It holds none out: how the policy does on unseen prompts is an evaluation's job."""

    train: list[PromptExample]
    eval: list[PromptExample]
    eval_rule: str
    prompts: dict[str, int]


def split_prompts(projects: list[Project], selection: PromptSelection) -> SplitPrompts:
    """The selected prompts of ``projects`` in id order; refused when there are none or more than MAX_RUN_PROMPTS."""
    prompts = Prompt.objects.filter(project__in=projects)
    if selection.mode == "ids":
        prompts = prompts.filter(pk__in=selection.ids)
    else:
        prompts = prompts.filter(split=Prompt.Split.TRAIN)
    rows = list(prompts.order_by("pk").values_list("pk", "messages")[: MAX_RUN_PROMPTS + 1])
    if len(rows) > MAX_RUN_PROMPTS:
        raise ValidationError({"prompt_selection": f"At most {MAX_RUN_PROMPTS:,} prompts per run: list the ones to use."})
    train = [PromptExample(prompt_id=pk, prompt=messages) for pk, messages in rows]
    rule = "no held-out split: evaluate the registered policy on held-out prompts"
    return SplitPrompts(train=train, eval=[], eval_rule=rule, prompts={"train": len(train), "eval": 0})


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
    # Online RL: the reward (the weighted sum) and its spread within a batch, each reward function's mean, the KL to
    # the reference, the completions' length and the share cut at the max, the policy's entropy, and how often the
    # clipped objective clipped.
    **{
        kind: [
            "reward", "reward_std", "rewards/reward_model/mean", "rewards/length_penalty/mean", "kl", "completions/mean_length",
            "completions/clipped_ratio", "entropy", "clip_ratio/region_mean", "loss",
        ]
        for kind in (TrainingRun.Kind.GRPO, TrainingRun.Kind.RLOO)
    },
}


def run_series(runs: list[TrainingRun]) -> dict[str, dict[tuple[int, str], list[tuple[int, float]]]]:
    """metric name -> (run id, split) -> [(step, value), ...]: the data of the run charts."""
    series: dict[str, dict[tuple[int, str], list[tuple[int, float]]]] = {}
    rows = TrainingMetric.objects.filter(run__in=runs).order_by("run_id", "step", "id")
    for run_id, step, split, name, value in rows.values_list("run_id", "step", "split", "name", "value"):
        series.setdefault(name, {}).setdefault((run_id, split), []).append((step, value))
    return series


def runs_with_versions() -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related("base_version", "reward_version", "model_version", "requested_by").prefetch_related("projects")


# --- online runs ------------------------------------------------------------------------------------------------------


def latest_samples(run: TrainingRun) -> list[TrainingSample]:
    """The completions recorded at the run's latest sampled step, best first."""
    step = run.samples.order_by("-step").values_list("step", flat=True).first()
    return [] if step is None else list(run.samples.filter(step=step).order_by("-reward", "id"))


def reward_hacking_signs(run: TrainingRun, series: dict) -> list[str]:
    """training.stats.reward_hacking_signs over the run's logged training series (``series``: run_series([run]), read
    once for the charts too) and, once its policy was evaluated against its base by a judge, the judge's held-out
    win rate."""
    if not run.is_online:
        return []

    def values(name: str) -> list[float]:
        return [value for _, value in series.get(name, {}).get((run.pk, TrainingMetric.Split.TRAIN), [])]

    return stats.reward_hacking_signs(
        values("reward"), values("completions/mean_length"), values("completions/clipped_ratio"),
        judge_win_rate=judge_win_rate_over_base(run),
    )


def judge_win_rate_over_base(run: TrainingRun) -> stats.Estimate | None:
    """The latest judged evaluation of the run's policy against its base: the policy's win rate, or None."""
    from training.models import Evaluation

    version = getattr(run, "model_version", None)
    if version is None:
        return None
    names = {version.name, run.base_version.name}
    evaluations = Evaluation.objects.filter(
        status=Evaluation.Status.SUCCEEDED, judge__isnull=False, entries__model_version=version
    ).filter(entries__model_version=run.base_version).distinct().order_by("-finished_at")
    for evaluation in evaluations:
        for pair in evaluation.results.get("pairs", []):
            if {pair["a"], pair["b"]} == names and pair["win_rate"]["value"] is not None:
                rate = pair["win_rate"]
                if pair["a"] == version.name:
                    return stats.Estimate(rate["value"], rate["low"], rate["high"], rate["count"])
                return stats.Estimate(1 - rate["value"], 1 - rate["high"], 1 - rate["low"], rate["count"])
    return None


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
        return "auto" if name in ("bf16", "gradient_checkpointing", "use_vllm") else "—"
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
            "made_by": _made_by(run) if run else ("adapter" if version.adapter_path else "base model"),
            "base_model": version.base_model,
        })
        version = version.parent
    return rows


def _made_by(run: TrainingRun) -> str:
    against = f" against {run.reward_version.name}" if run.reward_version_id else ""
    return f"{run.get_kind_display()} run {run.pk}{against}"
