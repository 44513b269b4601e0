"""Training runs: launch, the training they do in the GPU worker (config.jobs runs it: claim, heartbeat, cancel,
failure, dead workers), and registering the result.

DPO and reward runs train on preference pairs (``pair_filter``: annotation.pairs.PairFilter); SFT runs train on
demonstrations (``pair_filter`` then holds annotation.demonstrations.DemonstrationFilter's fields, stored on the run in
the same column), split by prompt the same way, fixed at launch as TrainingRunDemonstration rows, and register a policy
version like a DPO run. GRPO and RLOO runs (online RL) train on prompts (``pair_filter`` holds the prompt selection,
selectors.PromptSelection; fixed at launch as TrainingRunPrompt rows, none held out) against a reward version
(``reward_version``), and record a few completions with their rewards as they go (TrainingSample). What is said below
of pairs holds for an SFT run's demonstrations and an online run's prompts.

Before a launch, training_run_check measures the selected pairs against the max length with the base's tokenizer
(training.trainers.lengths, the same code the trainer uses) and refuses a run left with too few pairs; the worker
records the pairs the trainer actually used on the run (train_pairs_used, ...) and in the registered version's
manifest. A run's pairs are fixed when it is launched (TrainingRunPair rows, split by prompt), so pairs added later never
slip in and every model version traces back to the exact rankings behind it. The worker trains with
training.trainers, writes metrics as they are logged, and on success registers the adapter as a new ModelVersion in
the same transaction that marks the run succeeded. A failed or cancelled run registers nothing; a cancelled run
keeps the adapter it had reached in its folder. No run writes to rankings or pairs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from annotation.demonstrations import DemonstrationFilter, demonstration_filter_from, selected_demonstrations
from annotation.models import Project
from annotation.pairs import PairFilter, pair_filter_from, selected_pairs
from config import artifacts
from config.jobs import JobCancelled, cancel_was_requested, job_dispatch_on_commit, job_update, run_job
from generation.jobs import model_spec
from generation.models import ModelVersion
from generation.services import model_version_register
from training import selectors
from training.generate_and_score import judge_spec
from training.models import (
    RejectionSamplingJob, TrainingMetric, TrainingRun, TrainingRunDemonstration, TrainingRunPair, TrainingRunPrompt, TrainingSample,
)
from training.trainers.data import PreferenceExample, PromptExample, SFTExample, content_hash
from training.trainers.lengths import LengthReport, length_report, load_tokenizer, measure, too_few_reason, unmeasured_report
from training.trainers.online import RewardSpec, RewardTokenizerError, check_reward_tokenizer
from training.trainers.settings import ONLINE, SettingsError, TrainingSettings, training_settings

VERSION_KIND = {
    TrainingRun.Kind.DPO: ModelVersion.Kind.POLICY,
    TrainingRun.Kind.REWARD: ModelVersion.Kind.REWARD,
    TrainingRun.Kind.SFT: ModelVersion.Kind.POLICY,
    TrainingRun.Kind.GRPO: ModelVersion.Kind.POLICY,
    TrainingRun.Kind.RLOO: ModelVersion.Kind.POLICY,
}
# Where a refusal about the selection is reported: the API's and the forms' name of the filter.
FILTER_FIELD = {
    TrainingRun.Kind.DPO: "pair_filter", TrainingRun.Kind.REWARD: "pair_filter", TrainingRun.Kind.SFT: "demonstration_filter",
    TrainingRun.Kind.GRPO: "prompt_selection", TrainingRun.Kind.RLOO: "prompt_selection",
}
UNIT = {TrainingRun.Kind.SFT: "demonstration", TrainingRun.Kind.GRPO: "prompt", TrainingRun.Kind.RLOO: "prompt"}


@dataclass
class RunCheck:
    """What a launch would train on: the pairs (SFT: demonstrations) selected, split by prompt, and how many fit the
    max length (measured with the base's own tokenizer, as the trainer will). ``refusal`` says why it may not start,
    if it may not."""

    settings: TrainingSettings
    selection: PairFilter | DemonstrationFilter | selectors.PromptSelection
    split: selectors.SplitExamples | selectors.SplitDemonstrations | selectors.SplitPrompts
    lengths: LengthReport | None  # None where the base's tokenizer could not be loaded here
    tokenizer_error: str = ""
    refusal: dict[str, str] | None = None
    reward_tokenizer: str = ""  # online runs: "same" or "re-tokenized" (trainers.online.check_reward_tokenizer)

    @property
    def is_sft(self) -> bool:
        return isinstance(self.split, selectors.SplitDemonstrations)

    @property
    def unit(self) -> str:
        return f"{UNIT.get(self.settings.kind, 'pair')}s"

    def as_dict(self) -> dict:
        counts = {"train": len(self.split.train), "eval": len(self.split.eval)}
        return {
            "unit": self.unit,
            "pairs": counts if self.unit == "pairs" else None,
            "demonstrations": counts if self.is_sft else None,
            "prompts": counts if self.unit == "prompts" else None,
            "reward_tokenizer": self.reward_tokenizer,
            "sources": self.split.sources if self.is_sft else None,
            "eval_rule": self.split.eval_rule,
            "lengths": self.lengths.as_dict() if self.lengths else None,
            "tokenizer_error": self.tokenizer_error,
            "can_launch": self.refusal is None,
            "refusal": next(iter(self.refusal.values())) if self.refusal else "",
        }


def training_run_check(
    *,
    kind: str,
    base_version: ModelVersion,
    projects: list[Project],
    pair_filter: dict | None = None,
    settings: dict | None = None,
    reward_version: ModelVersion | None = None,
) -> RunCheck:
    """Validate a launch and measure its pairs against the max length, without queueing anything (the launch
    form's "Check pairs" and POST /api/training-runs/check/). Raises ValidationError for what is invalid outright.
    For ``kind="sft"``, ``pair_filter`` holds the demonstration filter's fields (annotation.demonstrations); for
    ``grpo`` and ``rloo``, the prompt selection (selectors.prompt_selection_from), and ``reward_version`` is the
    reward model they train against."""
    checked = _checked_settings(kind, settings)
    if base_version.kind != ModelVersion.Kind.POLICY:
        raise ValidationError(
            {"base_version": "Train on a policy model (a base model or an earlier DPO, SFT, GRPO or RLOO round), not a reward model."}
        )
    _check_reward_version(kind, reward_version)
    if not projects:
        raise ValidationError({"projects": "Choose at least one project."})
    unit = UNIT.get(kind, "pair")
    if kind == TrainingRun.Kind.SFT:
        selection = demonstration_filter_from(pair_filter)
        split = selectors.split_demonstrations(selected_demonstrations(projects, selection), selection.eval_fraction)
    elif kind in ONLINE:
        selection = selectors.prompt_selection_from(pair_filter)
        split = selectors.split_prompts(projects, selection)
    else:
        selection = pair_filter_from(pair_filter)
        split = selectors.split_examples(selected_pairs(projects, selection), selection.eval_fraction)
    if not split.train:
        reason = (
            f"No {unit} matches this selection." if not split.eval
            else f"Every selected {unit} is held out; nothing is left to train on."
        )
        raise ValidationError({FILTER_FIELD[kind]: reason})
    check = RunCheck(settings=checked, selection=selection, split=split, lengths=None)
    try:
        tokenizer = load_tokenizer(artifacts.local_copy(base_version.base_model, weights=False), local_only=True)
    except Exception as exc:  # noqa: BLE001 - a hub id not downloaded here, or a broken folder: the worker checks again
        check.tokenizer_error = (
            f"The tokenizer of {base_version.base_model} is not available here ({type(exc).__name__}), so the lengths are "
            "measured when the run starts."
        )
        lengths = unmeasured_report(len(split.train), len(split.eval), max_length=checked.max_length, too_long=checked.too_long)
    else:
        reserved = checked.max_completion_length if kind in ONLINE else 0
        lengths = length_report(
            measure(tokenizer, split.train, completion_tokens=reserved), measure(tokenizer, split.eval),
            max_length=checked.max_length, too_long=checked.too_long,
        )
        check.lengths = lengths
        if kind in ONLINE:
            _check_reward_tokenizer(check, tokenizer, reward_version)
    reason = too_few_reason(lengths, unit=f"{unit}s")
    if reason and not check.refusal:
        dropped = lengths.train.dropped or lengths.eval.dropped
        check.refusal = {"max_length" if dropped else FILTER_FIELD[kind]: reason}
    return check


def _check_reward_version(kind: str, reward_version: ModelVersion | None) -> None:
    if kind not in ONLINE:
        if reward_version is not None:
            raise ValidationError({"reward_version": "Only GRPO and RLOO runs train against a reward model."})
        return
    if reward_version is None:
        raise ValidationError({"reward_version": f"Choose the reward model the {kind} run trains the policy against."})
    if reward_version.kind != ModelVersion.Kind.REWARD or not reward_version.adapter_path:
        raise ValidationError({"reward_version": f"{reward_version.name} is not a reward model trained or registered here."})


def _check_reward_tokenizer(check: RunCheck, policy_tokenizer, reward_version: ModelVersion) -> None:
    """Whether the reward model reads the policy's tokens or re-tokenizes the text, refused when it cannot render a
    conversation; left to the worker when its tokenizer is not readable here."""
    try:
        reward_tokenizer = load_tokenizer(artifacts.local_copy(reward_version.adapter_path, weights=False), local_only=True)
    except Exception:  # noqa: BLE001 - the worker loads it again and fails the run with the reason
        return
    try:
        check.reward_tokenizer = check_reward_tokenizer(policy_tokenizer, reward_tokenizer)
    except RewardTokenizerError as exc:
        check.refusal = {"reward_version": str(exc)}


def training_run_create(
    *,
    kind: str,
    base_version: ModelVersion,
    projects: list[Project],
    pair_filter: dict | None = None,
    settings: dict | None = None,
    reward_version: ModelVersion | None = None,
    requested_by: AbstractUser | None = None,
) -> TrainingRun:
    """Validate, check the pairs fit, fix the run's pairs and queue it on the GPU queue (after the transaction
    commits). A run that would use too few pairs to mean anything is refused with the reason (training.trainers.lengths).
    For ``kind="sft"``, ``pair_filter`` holds the demonstration filter's fields and the run's demonstrations are fixed
    instead (e.g. ``{"sources": ["rejection_sampling"], "rejection_jobs": [job.pk]}``: one job's selection). A GRPO or
    RLOO run takes the prompt selection there and trains against ``reward_version``."""
    check = training_run_check(
        kind=kind, base_version=base_version, projects=projects, pair_filter=pair_filter, settings=settings, reward_version=reward_version
    )
    if check.refusal:
        raise ValidationError(check.refusal)
    checked, selection, split = check.settings, check.selection, check.split
    if check.is_sft:
        manifest = _sft_manifest(split, projects, check.lengths, selection)
    elif kind in ONLINE:
        manifest = _online_manifest(split, projects, check.lengths, reward_version)
    else:
        manifest = _manifest(split, projects, check.lengths)
    with transaction.atomic():
        run = TrainingRun.objects.create(
            kind=kind,
            base_version=base_version,
            reward_version=reward_version,
            config=checked.as_dict(),
            pair_filter=selection.as_dict(),
            dataset_manifest=manifest,
            requested_by=requested_by,
        )
        run.projects.set(projects)
        if kind in ONLINE:
            TrainingRunPrompt.objects.bulk_create([TrainingRunPrompt(run=run, prompt_id=e.prompt_id) for e in split.train], batch_size=2000)
        elif check.is_sft:
            TrainingRunDemonstration.objects.bulk_create(
                [TrainingRunDemonstration(run=run, demonstration_id=e.demonstration_id, split="train") for e in split.train]
                + [TrainingRunDemonstration(run=run, demonstration_id=e.demonstration_id, split="eval") for e in split.eval],
                batch_size=2000,
            )
        else:
            TrainingRunPair.objects.bulk_create(
                [TrainingRunPair(run=run, pair_id=e.pair_id, split=TrainingRunPair.Split.TRAIN) for e in split.train]
                + [TrainingRunPair(run=run, pair_id=e.pair_id, split=TrainingRunPair.Split.EVAL) for e in split.eval],
                batch_size=2000,
            )
        job_dispatch_on_commit(run)
    return run


def _checked_settings(kind: str, data: dict | None):
    try:
        return training_settings(kind, data)
    except SettingsError as exc:
        raise ValidationError(exc.errors) from exc


def _manifest(split: selectors.SplitExamples, projects: list[Project], lengths: LengthReport | None) -> dict:
    return {
        "pairs": {"train": len(split.train), "eval": len(split.eval)},
        # Measured at launch; what the trainer used is on the run (train_pairs_used, ...) and in "pairs_used" once known.
        "lengths": lengths.as_dict() if lengths else None,
        "prompts": split.prompts,
        "eval_rule": split.eval_rule,
        "projects": sorted(project.slug for project in projects),
        "sha256": content_hash(split.train, split.eval),
    }


def _sft_manifest(
    split: selectors.SplitDemonstrations, projects: list[Project], lengths: LengthReport | None, selection: DemonstrationFilter
) -> dict:
    """An SFT run's dataset: demonstrations per split and per source, prompts, the split rule, the content hash, and
    the rejection-sampling jobs whose selections it takes (each with its policy, judge, selection rule and sampling),
    so the version it registers traces back to the job, and through it to the models that made its data."""
    return {
        "demonstrations": {"train": len(split.train), "eval": len(split.eval)},
        "sources": split.sources,
        # Measured at launch; what the trainer used is on the run (train_pairs_used, ...) and in "demonstrations_used".
        "lengths": lengths.as_dict() if lengths else None,
        "prompts": split.prompts,
        "eval_rule": split.eval_rule,
        "statuses": list(selection.statuses),
        "projects": sorted(project.slug for project in projects),
        "rejection_sampling": _rejection_jobs(split.rejection_jobs),
        "sha256": content_hash(split.train, split.eval),
    }


def _online_manifest(
    split: selectors.SplitPrompts, projects: list[Project], lengths: LengthReport | None, reward_version: ModelVersion
) -> dict:
    """An online run's data: its prompts and the reward model that scored what the policy generated for them."""
    return {
        "prompts": {"train": len(split.train), "eval": 0},
        "lengths": lengths.as_dict() if lengths else None,
        "eval_rule": split.eval_rule,
        "projects": sorted(project.slug for project in projects),
        "reward_model": {
            "id": reward_version.pk, "name": reward_version.name, "base_model": reward_version.base_model,
            "adapter_path": reward_version.adapter_path,
        },
        "sha256": content_hash(split.train, split.eval),
    }


def _rejection_jobs(counts: dict[int, int]) -> list[dict]:
    jobs = RejectionSamplingJob.objects.filter(pk__in=counts).select_related("project", "policy", "judge").order_by("pk")
    return [
        {
            "job": job.pk,
            "project": job.project.slug,
            "policy": job.policy.name,
            "judge": job.judge.name,
            "n": job.n,
            "selection": job.selection,
            "k": job.k,
            "sampling": job.sampling,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            "demonstrations": counts[job.pk],
        }
        for job in jobs
    ]


def run_directory(run: TrainingRun) -> Path:
    """The run's work folder on the worker that trains it; published to the artifact store when it ends."""
    return settings.ARTIFACTS_DIR / "training-runs" / str(run.pk)


def run_store_key(run: TrainingRun) -> str:
    return f"artifacts/training-runs/{run.pk}"


def training_run_execute(run_id: int) -> TrainingRun:
    """Train to the end in this process (the GPU worker's task); a success registers the model version in the
    transaction that marks the run succeeded. The run row records how it ended."""
    return run_job(TrainingRun, run_id, work=_train, succeed=_register)


def _train(run: TrainingRun):
    from training.trainers.merge import merge_adapter
    from training.trainers.run import train_adapter, training_device

    device = training_device()
    folder = run_directory(run)
    job_update(run, output_dir=str(folder), device=device)
    if folder.exists():
        shutil.rmtree(folder)  # a leftover of an earlier attempt with the same id (a reused test database)
    folder.mkdir(parents=True)
    train, eval = run_examples(run)
    _write_dataset(folder, run, train, eval)
    base = run.base_version
    if base.adapter_path:
        base_model = training_base(run)  # the merged weights, in the run folder
        parent = model_spec(base)
        merge_adapter(base_model=parent.base_model, adapter_path=parent.adapter_path, output_dir=Path(base_model))
    else:
        base_model = model_spec(base).base_model  # this machine's copy
    job_update(run, summary={"base_model": training_base(run)})
    result = train_adapter(
        base_model=base_model,
        train=train,
        eval=eval,
        settings=training_settings(run.kind, run.config),
        output_dir=folder,
        reporter=_RunReporter(run),
        device=device,
        reward=_reward_spec(run),
    )
    _publish_run_folder(run, folder)
    if result.stopped_early:
        raise JobCancelled(summary=_summary(run, result))
    return result


def _publish_run_folder(run: TrainingRun, folder: Path) -> None:
    """The adapter, the data and the merged base go to the artifact store, where every worker reads them; the run
    records their URI from now on. Where the store is elsewhere, the worker's copy goes (a merged base would fill its
    disk)."""
    job_update(run, output_dir=artifacts.publish(folder, run_store_key(run), move=True))


def _reward_spec(run: TrainingRun) -> RewardSpec | None:
    """An online run's reward model, loaded as scoring jobs load it (generate_and_score.judge_spec)."""
    return RewardSpec(**judge_spec(run.reward_version)) if run.is_online else None


def training_base(run: TrainingRun) -> str:
    """The weights a run trains on: its base version's, merged with that version's adapter in the run folder."""
    base = run.base_version
    return artifacts.join(run.output_dir, "base") if base.adapter_path else base.base_model


def run_examples(run: TrainingRun) -> tuple[list[PreferenceExample], list[PreferenceExample]] | tuple[list[SFTExample], list[SFTExample]]:
    """The run's examples as fixed at launch, in id order: its pairs, an SFT run's demonstrations, or an online run's
    prompts."""
    if run.kind == TrainingRun.Kind.SFT:
        return run_demonstrations(run)
    if run.is_online:
        rows = run.run_prompts.order_by("prompt_id").values_list("prompt_id", "prompt__messages")
        return [PromptExample(prompt_id=pk, prompt=messages) for pk, messages in rows], []
    rows = run.run_pairs.order_by("pair_id").values_list(
        "split", "pair_id", "pair__prompt__messages", "pair__chosen__text", "pair__rejected__text", "pair__margin"
    )
    split: dict[str, list[PreferenceExample]] = {"train": [], "eval": []}
    for name, pk, messages, chosen, rejected, margin in rows:
        split[name].append(PreferenceExample(pair_id=pk, prompt=messages, chosen=chosen, rejected=rejected, margin=margin))
    return split["train"], split["eval"]


def run_demonstrations(run: TrainingRun) -> tuple[list[SFTExample], list[SFTExample]]:
    rows = run.run_demonstrations.order_by("demonstration_id").values_list(
        "split", "demonstration_id", "demonstration__prompt__messages", "demonstration__text"
    )
    split: dict[str, list[SFTExample]] = {"train": [], "eval": []}
    for name, pk, messages, text in rows:
        split[name].append(SFTExample(demonstration_id=pk, prompt=messages, completion=text))
    return split["train"], split["eval"]


def _write_dataset(folder: Path, run: TrainingRun, train, eval) -> None:
    """The exact data beside the adapter: pairs.jsonl (one example per line, with its split) or, for an SFT run,
    demonstrations.jsonl, for an online run prompts.jsonl; and manifest.json."""
    sft = run.kind == TrainingRun.Kind.SFT
    with open(folder / f"{run.trains_on}.jsonl", "w", encoding="utf-8") as out:
        for split, examples in (("train", train), ("eval", eval)):
            for e in examples:
                if run.is_online:
                    row = {"split": split, "prompt_id": e.prompt_id, "prompt": e.prompt}
                elif sft:
                    row = {"split": split, "demonstration_id": e.demonstration_id, "prompt": e.prompt, "completion": e.completion}
                else:
                    row = {"split": split, "pair_id": e.pair_id, "prompt": e.prompt, "chosen": e.chosen, "rejected": e.rejected, "margin": e.margin}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
    filter_name = FILTER_FIELD[run.kind]
    manifest = {**run.dataset_manifest, filter_name: run.pair_filter, "run": run.pk, "kind": run.kind}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))


class _RunReporter:
    """Writes the trainer's progress and metrics to the run's rows; asks the trainer to stop when cancelled."""

    def __init__(self, run: TrainingRun):
        self.run = run
        self.run_id = run.pk
        self.rows = TrainingRun.objects.filter(pk=run.pk)

    def prepared(self, examples: dict[str, int]) -> None:
        job_update(
            self.run, train_pairs_used=examples["train"], eval_pairs_used=examples["eval"],
            pairs_truncated=examples["truncated"], pairs_dropped=examples["dropped"],
        )
        manifest = Path(self.run.output_dir) / "manifest.json"
        if manifest.is_file():
            data = json.loads(manifest.read_text())
            manifest.write_text(json.dumps({**data, used_key(self.run): pairs_used(self.run)}, indent=2, sort_keys=True))

    def started(self, total_steps: int) -> None:
        now = timezone.now()
        loading = (now - self.run.started_at).total_seconds() if self.run.started_at else 0.0
        job_update(self.run, total_steps=total_steps, training_started_at=now, load_seconds=loading)

    def logged(self, step: int, split: str, metrics: dict[str, float]) -> None:
        TrainingMetric.objects.bulk_create(
            TrainingMetric(run_id=self.run_id, step=step, split=split, name=name, value=value) for name, value in metrics.items()
        )
        if split == TrainingMetric.Split.TRAIN:
            job_update(self.run, step=step)

    def should_stop(self) -> bool:
        return cancel_was_requested(self.run)

    def sampled(self, step: int, samples: list[dict]) -> None:
        TrainingSample.objects.bulk_create(
            TrainingSample(
                run_id=self.run_id, step=step, messages=sample["prompt"], completion=sample["completion"], tokens=sample["tokens"],
                reward=sample["reward"], rewards=sample["rewards"],
            )
            for sample in samples
        )


def used_key(run: TrainingRun) -> str:
    """The manifest's key for what the trainer used: "pairs_used", "demonstrations_used" (SFT) or "prompts_used"
    (GRPO, RLOO)."""
    return f"{run.trains_on}_used"


def pairs_used(run: TrainingRun) -> dict | None:
    """The pairs (an SFT run's demonstrations) the trainer used (after the max-length rule), or None before it was
    built."""
    if run.train_pairs_used is None:
        return None
    return {"train": run.train_pairs_used, "eval": run.eval_pairs_used, "truncated": run.pairs_truncated, "dropped": run.pairs_dropped}


def _summary(run: TrainingRun, result) -> dict:
    return {
        **result.summary,
        "steps": result.steps,
        "examples": result.examples,
        "quantized_layers": result.quantized_layers,
        "settings": result.settings,
        "adapter_dir": run_adapter(run, result),
    }


def run_adapter(run: TrainingRun, result) -> str:
    """The URI of the adapter a run trained, in the artifact store."""
    return artifacts.join(run.output_dir, Path(result.adapter_dir).relative_to(run_directory(run)).as_posix())


def _register(run: TrainingRun, result) -> dict:
    """Runs in the transaction that marks the run succeeded; returns the fields saved with it."""
    base = run.base_version
    base_model = training_base(run)
    against = f" against reward model {run.reward_version.name}" if run.reward_version_id else ""
    model_version_register(
        name=f"{base.name[:70]}-{run.kind}-run{run.pk}",
        base_model=base_model,
        adapter_path=run_adapter(run, result),
        kind=VERSION_KIND[run.kind],
        parent=base,
        notes=f"Trained by run {run.pk} ({run.get_kind_display()}) on {result.examples['train']} {run.trains_on}{against}"
        f" ({result.examples['eval']} held out for evaluation).",
        config={"training": result.settings, "dataset_manifest": {**run.dataset_manifest, used_key(run): pairs_used(run)}},
        metrics={"eval": result.eval_metrics, "train": result.train_metrics},
        training_run=run,
        created_by=run.requested_by,
    )
    return {"summary": {**_summary(run, result), "base_model": base_model}}
