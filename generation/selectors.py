"""Reads for generation jobs: progress figures for the pages and the API."""

from config.job_queue import job_progress as shared_progress
from config.job_queue import working_seconds
from generation.models import GenerationJob


def job_progress(job: GenerationJob) -> dict:
    """The shared progress figures plus tokens per second (model loading left out: a fresh worker process per job
    imports and loads before it generates)."""
    working = working_seconds(job)
    rate = job.tokens_generated / working if working > 0 and job.tokens_generated else None
    return {**shared_progress(job).as_dict(), "tokens_per_second": None if rate is None else round(rate, 1)}


def jobs_with_plan(project=None):
    jobs = GenerationJob.objects.select_related("project").prefetch_related("model_plan__model_version").order_by("-created_at")
    return jobs.filter(project=project) if project is not None else jobs
