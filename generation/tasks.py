"""Celery tasks of the generation app; they run on the `gpu` queue (see CELERY_TASK_ROUTES)."""

from celery import shared_task

from generation import jobs


@shared_task(acks_late=True)
def run_generation_job(job_id: int) -> str:
    return jobs.generation_job_run(job_id).status
