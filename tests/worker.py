"""A real Celery worker for integration tests, started the way `manage.py serve` starts the GPU worker, on the
broker of the environment (Redis in CI, the embedded filesystem broker otherwise) and the test database."""

import os
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

REPO = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Output:
    """Collects a process's output in a thread so a test can wait for a line."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in self.lines):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not seen within {timeout}s:\n{self.text}")

    @property
    def text(self) -> str:
        return "".join(self.lines)


def celery_env(extra_env: dict | None = None) -> dict:
    return {
        **os.environ, "DATABASE_URL": test_database_url(), "DJANGO_SETTINGS_MODULE": "tests.settings",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "PYTHONUNBUFFERED": "1", **(extra_env or {}),
    }


CELERY = [sys.executable, "-m", "celery", "-A", "config"]


def purge_queues(queues: str, env: dict) -> None:
    """Messages left by earlier runs must not reach a worker a test starts: job ids are reused by a fresh test database."""
    subprocess.run([*CELERY, "purge", "-f", "-Q", queues], cwd=REPO, env=env, capture_output=True, timeout=60)


class Worker:
    def __init__(self, queues: str = "gpu,default", extra_env: dict | None = None, purge: bool = True):
        self.env = celery_env(extra_env)
        if purge:
            purge_queues(queues, self.env)
        self.process = subprocess.Popen(
            [*CELERY, "worker", "--queues", queues, "--concurrency", "1", "--max-tasks-per-child", "1",
             "--hostname", f"test-{os.getpid()}-{queues.replace(',', '-')}@%h", "--without-gossip", "--without-mingle",
             "--loglevel", "INFO"],
            cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.output = Output(self.process)
        self.output.wait_for(r"ready\.", timeout=60)

    @property
    def log(self) -> str:
        return self.output.text

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def wait_until(condition, timeout: float, message="") -> None:
    """``message`` may be a callable, to describe the state at the time out (a process's log, say)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s {message() if callable(message) else message}")


class Beat:
    """Celery beat, sending the periodic tasks (the dead-job reaper) as `manage.py serve` starts it."""

    def __init__(self, schedule_file, extra_env: dict | None = None):
        self.process = subprocess.Popen(
            [*CELERY, "beat", "--loglevel", "INFO", "--schedule", str(schedule_file)],
            cwd=REPO, env=celery_env(extra_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.output = Output(self.process)
        self.output.wait_for(r"beat: Starting", timeout=60)

    @property
    def log(self) -> str:
        return self.output.text

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@contextmanager
def broker(url: str, extra_env: dict | None = None, transport_options: dict | None = None):
    """Point this process's Celery app (which enqueues the jobs) at ``url`` (with ``transport_options``, by default
    the settings' for their broker, the data directory's folders for another filesystem broker, none otherwise);
    yields the environment for the processes a test starts on the same broker (``extra_env`` added)."""
    from config.celery import app

    saved = os.environ.get("CELERY_BROKER_URL"), app.conf.broker_url, app.conf.broker_transport_options
    os.environ["CELERY_BROKER_URL"] = url  # Celery reads it before its configuration
    app.conf.broker_url = url
    app.conf.broker_transport_options = _transport_options(url) if transport_options is None else transport_options
    _forget_connections(app)
    try:
        yield {**(extra_env or {}), "CELERY_BROKER_URL": url}
    finally:
        environ_url, app.conf.broker_url, app.conf.broker_transport_options = saved
        if environ_url is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = environ_url
        _forget_connections(app)


def _transport_options(url: str) -> dict:
    if url == settings.CELERY_BROKER_URL:
        return settings.CELERY_BROKER_TRANSPORT_OPTIONS
    if url.startswith("filesystem"):
        folder = settings.BROKER_DIR
        return {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
                "control_folder": str(folder / "control"), "processed_folder": str(folder / "processed"), "store_processed": False}
    return {}


def _forget_connections(app) -> None:
    """The next message takes a connection to the broker now configured (kombu keeps one pool per broker)."""
    app._pool = None
    app.amqp._producer_pool = None
