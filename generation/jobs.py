"""Generation jobs: launch, and the work they do in the GPU worker (config.jobs runs it: claim, heartbeat, cancel,
failure, dead workers).

A job asks one or more model versions for ``n`` candidates each per selected prompt. Candidates are saved batch by
batch as the backend yields them, so a crash or a cancel keeps what was done. Empty responses and responses already
present for the prompt (the same text) are dropped and counted by reason; the job then tops the prompts that fell
short up with freshly seeded samples, at most TOP_UP_ROUNDS extra rounds, and counts what the top-ups added and the
prompts still short at the end. When a prompt has a candidate from every model of the plan (K in all), its
RankingItem is created and labelers see it.

Progress is counted in responses (prompts x K): ``responses_done`` those kept, ``work_done`` the same plus the
finished share of the batch now generating, as the backend reports it while it runs (``BatchProgress``; written at
most every PROGRESS_WRITE_SECONDS, which is also when a cancel is noticed mid-batch). The shared job progress takes
its rate and ETA from ``work_done``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, QuerySet

from annotation.importing import content_hash
from annotation.labeling import ranking_item_create
from annotation.models import Project, Prompt
from config import artifacts
from config.jobs import job_dispatch_on_commit, job_update, run_job, stop_if_cancelled
from generation.backends.base import BatchProgress, Generation, ModelSpec, PromptRequest, Sampling, auto_choice, open_backend
from generation.models import Candidate, GenerationJob, GenerationJobModel, ModelVersion

TOP_UP_ROUNDS = 2  # extra passes for prompts that lost samples to duplicates or empty responses
MAX_NEW_TOKENS = 4096
MAX_SEED = 2**31 - 1  # a C int for every sampler; top-up rounds add 1000 per round and stay below 2**32
MAX_STOP_STRINGS, MAX_STOP_CHARS = 16, 200
PROGRESS_WRITE_SECONDS = 1.5  # in-batch progress: at most one write (and one cancel check) this often


def model_spec(version: ModelVersion) -> ModelSpec:
    """Where this worker loads a model version from: its base and adapter as registered, or, where they live in a
    remote artifact store, this machine's cached copies (downloaded first when missing)."""
    return ModelSpec(artifacts.local_copy(version.base_model), artifacts.local_copy(version.adapter_path))


@dataclass(frozen=True)
class PlanEntry:
    model_version: ModelVersion
    n: int


def sampling_from(data: dict) -> Sampling:
    """Validated sampling settings, missing ones taking Sampling's defaults; raises ValidationError naming the field."""
    default = Sampling()
    try:
        sampling = Sampling(
            temperature=float(data.get("temperature", default.temperature)),
            top_p=float(data.get("top_p", default.top_p)),
            max_new_tokens=int(data.get("max_new_tokens", default.max_new_tokens)),
            seed=int(data.get("seed", default.seed)),
            stop=_stop_strings(data.get("stop")),
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(f"Sampling settings must be numbers: {exc}") from exc
    errors = {}
    if not 0.0 <= sampling.temperature <= 2.0:
        errors["temperature"] = "Temperature must be between 0 and 2."
    if not 0.0 < sampling.top_p <= 1.0:
        errors["top_p"] = "top_p must be above 0 and at most 1."
    if not 1 <= sampling.max_new_tokens <= MAX_NEW_TOKENS:
        errors["max_new_tokens"] = f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS}."
    if not 0 <= sampling.seed <= MAX_SEED:
        errors["seed"] = f"The seed must be between 0 and {MAX_SEED}."
    if errors:
        raise ValidationError(errors)
    return sampling


def _stop_strings(stop) -> tuple[str, ...]:
    """A list of strings (a bare string would be read letter by letter as stop strings); empty ones are dropped."""
    if stop is None:
        return ()
    if not isinstance(stop, (list, tuple)) or not all(isinstance(text, str) for text in stop):
        raise ValidationError({"stop": "stop must be a list of strings, e.g. [\"\\n\\n\"]."})
    stop = tuple(text for text in stop if text)
    if len(stop) > MAX_STOP_STRINGS or any(len(text) > MAX_STOP_CHARS for text in stop):
        raise ValidationError({"stop": f"At most {MAX_STOP_STRINGS} stop strings of at most {MAX_STOP_CHARS} characters each."})
    return stop


def generation_job_create(
    *,
    project: Project,
    plan: Sequence[PlanEntry],
    prompt_selection: dict,
    sampling: dict,
    backend: str = GenerationJob.Backend.AUTO,
    requested_by: AbstractUser | None = None,
) -> GenerationJob:
    """Validate and queue a job on the GPU queue (after the transaction commits)."""
    checked = sampling_from(sampling)
    _check_plan(project, plan, checked)
    if backend not in GenerationJob.Backend.values:
        raise ValidationError({"backend": f"Choose one of {', '.join(GenerationJob.Backend.values)}."})
    prompts = selected_prompts(project, prompt_selection)
    if not prompts.exists():
        raise ValidationError({"prompt_selection": "No prompt matches this selection."})
    with transaction.atomic():
        job = GenerationJob.objects.create(
            project=project,
            backend=backend,
            sampling=checked.as_dict(),
            prompt_selection=prompt_selection,
            prompts_total=prompts.count(),
            responses_total=prompts.count() * sum(entry.n for entry in plan),
            requested_by=requested_by,
        )
        GenerationJobModel.objects.bulk_create(
            GenerationJobModel(job=job, model_version=entry.model_version, n=entry.n) for entry in plan
        )
        job_dispatch_on_commit(job)
    return job


def _check_plan(project: Project, plan: Sequence[PlanEntry], sampling: Sampling) -> None:
    if not plan:
        raise ValidationError({"plan": "Choose at least one model version."})
    if len({entry.model_version.pk for entry in plan}) != len(plan):
        raise ValidationError({"plan": "Each model version may appear once."})
    if any(entry.model_version.kind != ModelVersion.Kind.POLICY for entry in plan):
        raise ValidationError({"plan": "Only policy models generate; reward models score."})
    total = sum(entry.n for entry in plan)
    if total != project.responses_per_item or any(entry.n < 1 for entry in plan):
        raise ValidationError(
            {"plan": f"The models' candidates per prompt must add up to the project's K ({project.responses_per_item}), not {total}."}
        )
    if sampling.temperature == 0 and any(entry.n > 1 for entry in plan):
        raise ValidationError({"temperature": "Greedy decoding (temperature 0) gives one answer: use n = 1 per model or sample."})


MAX_SELECTED_IDS = 10_000


def selected_prompts(project: Project, selection: dict) -> QuerySet[Prompt]:
    """``missing``: prompts without a ranking item yet; ``heldout``: the held-out split; ``ids``: the listed ids."""
    mode = selection.get("mode", "missing")
    prompts = project.prompts.order_by("id")
    if mode == "missing":
        return prompts.annotate(item_count=Count("items")).filter(item_count=0)
    if mode == "heldout":
        return prompts.filter(split=Prompt.Split.HELDOUT)
    if mode == "ids":
        ids = selection.get("ids") or []
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise ValidationError({"prompt_selection": "ids must be a list of prompt ids."})
        if len(ids) > MAX_SELECTED_IDS:  # a query takes only so many parameters (SQLite 32,766; PostgreSQL 65,535)
            raise ValidationError({"prompt_selection": f"At most {MAX_SELECTED_IDS:,} prompt ids per job (got {len(ids):,})."})
        return prompts.filter(pk__in=ids)
    raise ValidationError({"prompt_selection": "mode must be missing, heldout or ids."})


def generation_job_run(job_id: int) -> GenerationJob:
    """Run a job to its end in this process (the GPU worker's task). The job row records how it ended."""
    return run_job(GenerationJob, job_id, work=lambda job: _JobRun(job).run())


class _JobRun:
    """One job's pass over its plan: each model in turn generates its share for every selected prompt."""

    def __init__(self, job: GenerationJob):
        self.job = job
        self.sampling = sampling_from(job.sampling)
        self.messages = dict(selected_prompts(job.project, job.prompt_selection).values_list("pk", "messages"))
        self.plan = list(job.model_plan.select_related("model_version"))
        self.models_done: dict[int, int] = {}  # prompt id -> models whose first round covered it
        self.itemized: set[int] = set()
        self.short: set[int] = set()  # prompts some model left with fewer than its n after every round
        self.last_write = 0.0

    def run(self) -> None:
        # The prompts are selected again as the job starts (others may have filled some since it was queued).
        job_update(self.job, responses_total=len(self.messages) * sum(entry.n for entry in self.plan))
        for entry in self.plan:
            self._generate(entry)
        job_update(self.job, prompts_short=len(self.short))

    def _generate(self, entry: GenerationJobModel) -> None:
        version = entry.model_version
        started = time.monotonic()
        backend = open_backend(self.job.backend, model_spec(version))
        job_update(
            self.job, load_seconds=self.job.load_seconds + time.monotonic() - started, device=backend.device,
            backend_used=backend.name, backend_reason=self._why(backend),
        )
        try:
            wanted = {prompt_id: entry.n for prompt_id in self.messages}
            for round_number in range(1 + TOP_UP_ROUNDS):
                requests = [PromptRequest(key=p, messages=self.messages[p], n=n) for p, n in wanted.items() if n > 0]
                if not requests:
                    break
                if round_number:
                    job_update(self.job, top_up_rounds=max(self.job.top_up_rounds, round_number))
                round_sampling = _reseeded(self.sampling, round_number)
                for batch in backend.generate(requests, round_sampling, on_progress=self._in_batch):
                    kept = _save_batch(self.job, version, batch, round_sampling)
                    for prompt_id, count in kept.items():
                        wanted[prompt_id] -= count
                    batch_prompts = {generation.key for generation in batch}
                    if round_number == 0:
                        for prompt_id in batch_prompts:
                            self.models_done[prompt_id] = self.models_done.get(prompt_id, 0) + 1
                    self._itemize(batch_prompts)
                    _progress(self.job, batch, sum(kept.values()), self._finished_prompts(), topped_up=bool(round_number))
            self.short |= {prompt_id for prompt_id, n in wanted.items() if n > 0}
        finally:
            backend.close()

    def _why(self, backend) -> str:
        """Why this backend: auto's reason, or that it was asked for."""
        if self.job.backend != GenerationJob.Backend.AUTO:
            return "chosen for the job"
        choice, reason = auto_choice()
        return f"auto chose it: {reason}" if choice == backend.name else "auto chose it"

    def _in_batch(self, progress: BatchProgress) -> None:
        """The backend's report from inside a batch: written at most every PROGRESS_WRITE_SECONDS (and a cancel
        noticed then, without waiting for the batch to end)."""
        now = time.monotonic()
        if now - self.last_write < PROGRESS_WRITE_SECONDS:
            return
        self.last_write = now
        job = self.job
        fields = {"work_done": min(float(job.responses_total), job.responses_done + progress.fraction * progress.sequences)}
        if progress.tokens is not None:
            fields["tokens_in_batch"] = progress.tokens
        job_update(job, **fields)
        stop_if_cancelled(job)

    def _finished_prompts(self) -> int:
        return sum(1 for count in self.models_done.values() if count == len(self.plan))

    def _itemize(self, prompt_ids: set[int]) -> None:
        """Put prompts in the labeling queue as soon as they have their K candidates, not at the end of the job."""
        self.itemized |= _create_items(self.job, sorted(prompt_ids - self.itemized))


def _reseeded(sampling: Sampling, round_number: int) -> Sampling:
    """Top-up rounds sample again with another seed; round 0 keeps the user's."""
    return replace(sampling, seed=sampling.seed + 1000 * round_number) if round_number else sampling


def _save_batch(job: GenerationJob, version: ModelVersion, batch: list[Generation], sampling: Sampling) -> dict[int, int]:
    """Save a batch's new, non-empty responses; returns how many were kept per prompt."""
    kept: dict[int, int] = {}
    empty = duplicate = 0
    with transaction.atomic():
        existing = set(
            Candidate.objects.filter(prompt_id__in={g.key for g in batch}).values_list("prompt_id", "text_hash")
        )
        new = []
        for generation in batch:
            key = (generation.key, content_hash(generation.text))
            if not generation.text.strip():
                empty += 1
                continue
            if key in existing:
                duplicate += 1
                continue
            existing.add(key)
            kept[generation.key] = kept.get(generation.key, 0) + 1
            new.append(
                Candidate(
                    prompt_id=generation.key, text=generation.text, text_hash=key[1], source=Candidate.Source.GENERATED,
                    model_version=version, generation_job=job, sampling=sampling.as_dict(),
                    num_tokens=generation.num_tokens, finish_reason=generation.finish_reason,
                )
            )
        Candidate.objects.bulk_create(new)
        if empty or duplicate:
            job_update(
                job, duplicates_dropped=job.duplicates_dropped + empty + duplicate,
                dropped_empty=job.dropped_empty + empty, dropped_duplicate=job.dropped_duplicate + duplicate,
            )
    return kept


def _progress(job: GenerationJob, batch: list[Generation], kept: int, finished_prompts: int, topped_up: bool) -> None:
    """Report a saved batch (and that the worker is alive); stop here if an admin cancelled the job."""
    done = job.responses_done + kept
    job_update(
        job, tokens_generated=job.tokens_generated + sum(g.num_tokens for g in batch), tokens_in_batch=0,
        prompts_done=finished_prompts, responses_done=done, work_done=float(done),
        topped_up=job.topped_up + (kept if topped_up else 0),
    )
    stop_if_cancelled(job)


def _create_items(job: GenerationJob, prompt_ids: list[int]) -> set[int]:
    """One item per prompt whose candidates from this job reach K, with exactly the plan's share from each model.
    Returns the prompts that got their item."""
    plan = {entry.model_version_id: entry.n for entry in job.model_plan.all()}
    candidates = (
        Candidate.objects.filter(generation_job=job, prompt_id__in=prompt_ids)
        .order_by("id")
        .values_list("pk", "prompt_id", "model_version_id")
    )
    by_prompt: dict[int, dict[int, list[int]]] = {}
    for pk, prompt_id, version_id in candidates:
        by_prompt.setdefault(prompt_id, {}).setdefault(version_id, []).append(pk)
    created = set()
    for prompt_id in prompt_ids:
        per_model = by_prompt.get(prompt_id, {})
        if all(len(per_model.get(version_id, [])) >= n for version_id, n in plan.items()):
            chosen = [pk for version_id, n in plan.items() for pk in per_model[version_id][:n]]
            prompt = Prompt.objects.select_related("project").get(pk=prompt_id)
            ranking_item_create(prompt=prompt, candidates=list(Candidate.objects.filter(pk__in=chosen)))
            created.add(prompt_id)
    return created


def first_generation_queue(*, project: Project, model: ModelVersion, max_new_tokens: int = 128) -> GenerationJob | None:
    """Queue a first job filling every prompt of a project that never had one (the demo's); None otherwise."""
    if project.generation_jobs.exists() or not selected_prompts(project, {"mode": "missing"}).exists():
        return None
    return generation_job_create(
        project=project,
        plan=[PlanEntry(model, project.responses_per_item)],
        prompt_selection={"mode": "missing"},
        sampling=replace(Sampling(), max_new_tokens=max_new_tokens).as_dict(),
    )
