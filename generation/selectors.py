"""Reads for generation jobs: progress figures for the pages and the API."""

from dataclasses import dataclass

from django.utils import timezone

from generation.models import GenerationJob


@dataclass(frozen=True)
class JobProgress:
    percent: int
    elapsed_seconds: float
    tokens_per_second: float | None
    eta_seconds: float | None

    def as_dict(self) -> dict:
        return {
            "percent": self.percent,
            "elapsed_seconds": round(self.elapsed_seconds, 1),
            "tokens_per_second": None if self.tokens_per_second is None else round(self.tokens_per_second, 1),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds),
        }


def job_progress(job: GenerationJob) -> JobProgress:
    end = job.finished_at or timezone.now()
    elapsed = (end - job.started_at).total_seconds() if job.started_at else 0.0
    percent = int(100 * job.prompts_done / job.prompts_total) if job.prompts_total else 0
    if job.status == GenerationJob.Status.SUCCEEDED:
        percent = 100
    # Rates leave out model loading (a fresh worker process per job imports and loads before it generates).
    generating = max(0.0, elapsed - job.load_seconds)
    rate = job.tokens_generated / generating if generating > 0 and job.tokens_generated else None
    eta = None
    if job.status == GenerationJob.Status.RUNNING and job.prompts_done:
        eta = generating / job.prompts_done * (job.prompts_total - job.prompts_done)
    return JobProgress(percent=percent, elapsed_seconds=elapsed, tokens_per_second=rate, eta_seconds=eta)


def jobs_with_plan(project=None):
    jobs = GenerationJob.objects.select_related("project").prefetch_related("model_plan__model_version").order_by("-created_at")
    return jobs.filter(project=project) if project is not None else jobs
