import argparse

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection

from config import artifacts, jobs, processes


class Command(BaseCommand):
    help = (
        "Run the web server (gunicorn), the Celery workers (queue default, and queue gpu with one worker per GPU) and "
        "Celery beat (the dead-job reaper) until Ctrl-C, restarting any that exits. On a machine that joins a "
        "deployment, --workers-only runs just the workers: beat must run once per deployment, on the main machine."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--web-workers", type=int, default=None, help="gunicorn processes (default: 2 per core).")
        parser.add_argument("--access-log", action="store_true", help="Log every HTTP request.")
        parser.add_argument(
            "--gpus", type=gpu_ids, default=None,
            help="The GPUs to run a gpu worker on, one each, as nvidia-smi numbers them: 0,2. Default: those in "
                 "CUDA_VISIBLE_DEVICES where it is set, else those nvidia-smi lists; with none, one gpu worker pinned "
                 "to no GPU.",
        )
        parser.add_argument(
            "--workers-only", action="store_true",
            help="Run only the Celery workers, for a machine that joins a deployment (same DATABASE_URL, "
                 "CELERY_BROKER_URL and PREFLOOP_SECRET_KEY): no web server, no collectstatic, and no beat, which must "
                 "run once per deployment, on the main machine.",
        )
        parser.add_argument(
            "--queues", type=queue_names, default=list(processes.QUEUES),
            help="The queues to run workers for, among default and gpu (default: both). The default queue must be "
                 "served on some machine: it runs the reaper, imports and exports.",
        )

    def handle(self, *args, **options):
        gpus, source = (options["gpus"], "from --gpus") if options["gpus"] is not None else processes.visible_gpus()
        web = None if options["workers_only"] else processes.web(
            options["host"], options["port"], workers=options["web_workers"], access_log=options["access_log"]
        )
        specs = processes.machine_processes(queues=options["queues"], gpus=gpus, web=web)
        if web:
            call_command("collectstatic", interactive=False, verbosity=0)
        if "gpu" in options["queues"]:
            self.stdout.write(gpu_workers_sentence(gpus, source))
        if options["workers_only"]:
            for warning in machine_local_services():
                self.stderr.write(self.style.WARNING(warning))
        code = processes.supervise(
            specs, on_started=lambda: self.stdout.write(self.style.SUCCESS(running_sentence(options))), on_exit=fail_jobs_of
        )
        raise SystemExit(code)


def gpu_ids(text: str) -> list[str]:
    try:
        return processes.parse_gpu_ids(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def queue_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    unknown = [name for name in names if name not in processes.QUEUES]
    if unknown:
        raise argparse.ArgumentTypeError(f"Unknown queue {', '.join(map(repr, unknown))}: choose among {', '.join(processes.QUEUES)}.")
    return list(dict.fromkeys(names))


def gpu_workers_sentence(gpus: list[str], source: str) -> str:
    """"gpu workers: worker-gpu0 on GPU 0, worker-gpu2 on GPU 2 (from --gpus)."""
    if not gpus:
        return f"One gpu worker, pinned to no GPU: none found ({source})."
    workers = ", ".join(f"{processes.gpu_worker(gpu).name} on GPU {gpu}" for gpu in gpus)
    return f"gpu workers: {workers} ({source})."


def machine_local_services() -> list[str]:
    """What a machine that joins a deployment could not share with the others: each is one machine's folder."""
    found = []
    if connection.vendor == "sqlite":
        found.append("DATABASE_URL is SQLite, a file of this machine: workers elsewhere need the deployment's PostgreSQL.")
    if settings.CELERY_BROKER_URL.startswith("filesystem"):
        found.append("CELERY_BROKER_URL is the embedded filesystem broker, a folder of this machine: use the deployment's Redis or RabbitMQ.")
    if not artifacts.is_remote(settings.ARTIFACTS_URL):
        found.append(f"The artifact store is the local folder {settings.ARTIFACTS_URL}: other machines must mount it at the same path, or set PREFLOOP_ARTIFACTS_URL=s3://...")
    return found


def running_sentence(options) -> str:
    if options["workers_only"]:
        return f"Prefloop workers are running for queues {', '.join(options['queues'])} (Ctrl-C stops them)."
    return f"Prefloop is running at http://{options['host']}:{options['port']}/ (Ctrl-C stops it)."


def fail_jobs_of(name: str, dead_pids: set[int]) -> None:
    """A supervised process exited: the jobs that ran in its processes are failed now, not after the reaper's wait."""
    try:
        jobs.fail_jobs_of_dead_processes(dead_pids)
    finally:
        connection.close()  # serve holds no connection between exits
