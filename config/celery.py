"""The Celery app. Two queues: `default` for light work and `gpu` for generation and training jobs,
consumed by a worker with concurrency 1 and one process per job (see README, "Workers")."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Progress bars of model loading and dataset preparation are terminal animations: in a worker's log they are noise
# (and Celery would log each redraw). Jobs report their progress to the database instead.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

app = Celery("prefloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="config.celery.reap_dead_jobs", ignore_result=True)
def reap_dead_jobs() -> int:
    """Run by Celery beat (see CELERY_BEAT_SCHEDULE): jobs whose worker died are marked failed, and jobs launched
    while the broker was unreachable are sent now that it answers."""
    from config.jobs import reap_dead_jobs as reap
    from config.jobs import redispatch_undelivered_jobs

    redispatch_undelivered_jobs()
    return reap()
