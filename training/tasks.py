"""Celery tasks of the training app; they run on the `gpu` queue (see CELERY_TASK_ROUTES)."""

from celery import shared_task

from training import scoring, services


@shared_task(acks_late=True)
def run_training(run_id: int) -> str:
    return services.training_run_execute(run_id).status


@shared_task(acks_late=True)
def run_scoring(job_id: int) -> str:
    return scoring.scoring_job_execute(job_id).status


@shared_task(acks_late=True)
def run_evaluation(evaluation_id: int) -> str:
    from training import evaluation

    return evaluation.evaluation_execute(evaluation_id).status


@shared_task(acks_late=True)
def run_rejection_sampling(job_id: int) -> str:
    from training import rejection_sampling

    return rejection_sampling.rejection_sampling_execute(job_id).status
