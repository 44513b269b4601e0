"""Celery tasks of the annotation app; they run on the `default` queue."""

from celery import shared_task

from annotation import exports, imports


@shared_task(acks_late=True)
def run_export(export_id: int) -> str:
    return exports.export_run(export_id).status


@shared_task(acks_late=True)
def run_import(import_id: int) -> str:
    return imports.import_run(import_id).status
