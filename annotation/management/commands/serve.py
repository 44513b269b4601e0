from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection

from config import jobs, processes


class Command(BaseCommand):
    help = "Run the web server (gunicorn), the Celery workers (queues default and gpu) and Celery beat (the dead-job reaper) until Ctrl-C, restarting any that exits."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--web-workers", type=int, default=None, help="gunicorn processes (default: 2 per core).")
        parser.add_argument("--access-log", action="store_true", help="Log every HTTP request.")

    def handle(self, *args, **options):
        call_command("collectstatic", interactive=False, verbosity=0)
        specs = [
            processes.web(options["host"], options["port"], workers=options["web_workers"], access_log=options["access_log"]),
            processes.default_worker(),
            processes.gpu_worker(),
            processes.beat(),
        ]
        url = f"http://{options['host']}:{options['port']}/"
        code = processes.supervise(
            specs,
            on_started=lambda: self.stdout.write(self.style.SUCCESS(f"Prefloop is running at {url} (Ctrl-C stops it).")),
            on_exit=fail_jobs_of,
        )
        raise SystemExit(code)


def fail_jobs_of(name: str, dead_pids: set[int]) -> None:
    """A supervised process exited: the jobs that ran in its processes are failed now, not after the reaper's wait."""
    try:
        jobs.fail_jobs_of_dead_processes(dead_pids)
    finally:
        connection.close()  # serve holds no connection between exits
