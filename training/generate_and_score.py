"""What evaluations and rejection sampling share: a policy answering prompts N times through a generation backend, and
a judge reward model scoring the answers, each as a step of a job (config.jobs).

Both steps count their work in the job's ``work_done`` (one unit per response generated, one per response scored),
record model loading in ``load_seconds`` (left out of rates and ETAs) and stop between batches when an admin
cancels; generation also reports how far the batch now generating is (the backend's ``BatchProgress``, written at
most every PROGRESS_WRITE_SECONDS, which is also when a cancel is noticed mid-batch). The rows are the caller's: a
generated response becomes whatever ``make_row`` builds, and scores are written to the ``score`` field of the rows
named.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import QuerySet

from annotation.models import Project, Prompt
from config.jobs import Job, job_update, stop_if_cancelled
from generation.backends.base import BatchProgress, Generation, PromptRequest, Sampling, open_backend
from generation.jobs import MAX_SELECTED_IDS, PROGRESS_WRITE_SECONDS, model_spec
from generation.models import ModelVersion

SCORE_BATCH = 16


# --- checks at launch -------------------------------------------------------------------------------------------------


def check_judge(judge: ModelVersion | None) -> None:
    """A judge must be a reward model trained or registered here (a reward adapter); None passes."""
    if judge is not None and (judge.kind != ModelVersion.Kind.REWARD or not judge.adapter_path):
        raise ValidationError({"judge": f"{judge.name} is not a reward model: the judge must be a reward model trained or registered here."})


def listed_prompts(project: Project, ids, what: str) -> QuerySet[Prompt]:
    """The project's prompts among ``ids`` (a non-empty list of ids, at most MAX_SELECTED_IDS); ``what`` names the
    job in messages ("evaluation")."""
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValidationError({"prompt_selection": "ids must be a non-empty list of prompt ids."})
    if len(ids) > MAX_SELECTED_IDS:
        raise ValidationError({"prompt_selection": f"At most {MAX_SELECTED_IDS:,} prompts per {what} (got {len(ids):,})."})
    return project.prompts.filter(pk__in=ids).order_by("id")


def prompt_messages(prompts: QuerySet[Prompt], *, empty: str, what: str) -> list[tuple[int, list[dict]]]:
    """(id, messages) of these prompts, refused when there are none (``empty`` says why) or more than
    MAX_SELECTED_IDS."""
    chosen = list(prompts.values_list("pk", "messages")[: MAX_SELECTED_IDS + 1])
    if not chosen:
        raise ValidationError({"prompt_selection": empty})
    if len(chosen) > MAX_SELECTED_IDS:
        raise ValidationError({"prompt_selection": f"At most {MAX_SELECTED_IDS:,} prompts per {what}: list the ones to use."})
    return chosen


# --- the work, in the GPU worker ------------------------------------------------------------------------------------


def generate(
    job: Job,
    version: ModelVersion,
    requests: Sequence[PromptRequest],
    sampling: Sampling,
    make_row: Callable[[Generation, int], models.Model],
) -> None:
    """Have ``version`` answer ``requests`` with the job's backend; each batch's responses are saved as it comes
    (``make_row(generation, sample)``, the sample numbered from 0 per prompt) and counted in ``work_done``."""
    started = time.monotonic()
    backend = open_backend(job.backend, model_spec(version))
    job_update(job, load_seconds=job.load_seconds + time.monotonic() - started, device=backend.device)
    progress = _InBatch(job)
    try:
        for batch in backend.generate(requests, sampling, on_progress=progress):
            samples: dict[int, int] = {}
            rows = []
            for generation in batch:
                sample = samples[generation.key] = samples.get(generation.key, -1) + 1
                rows.append(make_row(generation, sample))
            if rows:
                type(rows[0]).objects.bulk_create(rows)
            progress.done += len(rows)
            job_update(job, work_done=progress.done)
            stop_if_cancelled(job)
    finally:
        backend.close()


class _InBatch:
    """The backend's report from inside a batch: ``work_done`` moves with the batch's finished share, written at
    most every PROGRESS_WRITE_SECONDS (and a cancel noticed then, without waiting for the batch to end)."""

    def __init__(self, job: Job):
        self.job, self.done, self.last_write = job, job.work_done, time.monotonic()

    def __call__(self, progress: BatchProgress) -> None:
        now = time.monotonic()
        if now - self.last_write < PROGRESS_WRITE_SECONDS:
            return
        self.last_write = now
        job_update(self.job, work_done=self.done + int(progress.fraction * progress.sequences))
        stop_if_cancelled(self.job)


def judge_spec(judge: ModelVersion) -> dict:
    """How every job loads a reward model (RewardScorer's arguments): its base, its adapter (local copies, see
    ``model_spec``), and 4 bits when it was trained in 4 bits. Scoring jobs, evaluations, rejection sampling and online
    runs all score alike."""
    spec = model_spec(judge)
    return {
        "base_model": spec.base_model, "adapter_path": spec.adapter_path,
        "load_in_4bit": bool(judge.config.get("training", {}).get("load_in_4bit", False)),
    }


def open_scorer(job: Job, judge: ModelVersion):
    """The judge's RewardScorer, its loading counted in the job's ``load_seconds``."""
    from training.trainers.scoring import RewardScorer

    started = time.monotonic()
    scorer = RewardScorer(**judge_spec(judge))
    job_update(job, load_seconds=job.load_seconds + time.monotonic() - started)
    return scorer


def score(job: Job, judge: ModelVersion, model: type[models.Model], responses: Sequence[tuple[int, list[dict], str]]) -> None:
    """Score ``responses`` ((row id, prompt messages, text), in this order) with ``judge``, writing each batch's
    scores to the rows of ``model`` and counting them in ``work_done``."""
    scorer = open_scorer(job, judge)
    done = 0
    for scores in scorer.score([(messages, text) for _, messages, text in responses], batch_size=SCORE_BATCH):
        batch = responses[done : done + len(scores)]
        model.objects.bulk_update([model(pk=pk, score=value) for (pk, _, _), value in zip(batch, scores, strict=True)], ["score"])
        done += len(scores)
        job_update(job, work_done=job.work_done + len(scores))
        stop_if_cancelled(job)
