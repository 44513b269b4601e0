"""Reads for generation jobs: progress figures for the pages and the API, and the sentences that explain a job's
backend and its dropped responses."""

from config.job_queue import job_progress as shared_progress
from config.job_queue import working_seconds
from generation.jobs import TOP_UP_ROUNDS
from generation.models import GenerationJob


def job_progress(job: GenerationJob) -> dict:
    """The shared progress figures (in responses, moving within a batch) plus tokens: generated so far, the batch
    now running included where the backend counts them, and per second (model loading left out: a fresh worker
    process per job imports and loads before it generates)."""
    working = working_seconds(job)
    tokens = job.tokens_generated + job.tokens_in_batch
    rate = tokens / working if working > 0 and tokens else None
    return {
        **shared_progress(job).as_dict(),
        "work_done": round(job.done_exact, 2),
        "tokens": tokens,
        "tokens_per_second": None if rate is None else round(rate, 1),
        "backend": backend_text(job),
        "dropped": dropped_text(job),
    }


def backend_text(job: GenerationJob) -> str:
    """"transformers on cpu (auto chose it: no GPU)"; before it starts, what was asked for."""
    if job.backend_used:
        where = f" on {job.device}" if job.device else ""
        return f"{job.backend_used}{where}" + (f" ({job.backend_reason})" if job.backend_reason else "")
    if job.backend == GenerationJob.Backend.AUTO:
        return "auto (chosen when the job starts: vLLM with a GPU, transformers otherwise)"
    return job.get_backend_display()


def responses_per_prompt(job: GenerationJob) -> int:
    return sum(entry.n for entry in job.model_plan.all())


def dropped_text(job: GenerationJob) -> str:
    """What "dropped" counted and what became of it, from what happened: "3 responses dropped (2 empty, 1 duplicate
    of another response to its prompt); 3 generated again in 1 extra round; every prompt reached K = 4"."""
    k = responses_per_prompt(job)
    if not job.duplicates_dropped:
        return "none dropped (empty or duplicate responses are dropped and generated again)"
    reasons = [
        f"{count} {what}"
        for count, what in ((job.dropped_empty, "empty"), (job.dropped_duplicate, "duplicate of another response to its prompt"))
        if count
    ]
    text = f"{job.duplicates_dropped} response{'s' if job.duplicates_dropped != 1 else ''} dropped"
    text += f" ({', '.join(reasons)})" if reasons else " (empty or duplicate)"
    if job.top_up_rounds:
        rounds = f"{job.top_up_rounds} extra round{'s' if job.top_up_rounds != 1 else ''}"
        text += f"; {job.topped_up} generated again in {rounds} (freshly seeded)"
    if job.status == GenerationJob.Status.SUCCEEDED:
        if job.prompts_short:
            plural = "s" if job.prompts_short != 1 else ""
            text += (
                f"; {job.prompts_short} prompt{plural} still short of K = {k} after the extra rounds: "
                f"no ranking item for {'them' if plural else 'it'}"
            )
        else:
            text += f"; every prompt reached K = {k}"
    elif job.is_active:
        text += f"; prompts short of K get up to {TOP_UP_ROUNDS} extra rounds after each model's pass"
    return text


def jobs_with_plan(project=None):
    jobs = GenerationJob.objects.select_related("project").prefetch_related("model_plan__model_version").order_by("-created_at")
    return jobs.filter(project=project) if project is not None else jobs
