"""The processes of one Prefloop machine: the web server, the two Celery workers and Celery beat.

`python manage.py serve` runs them together; a larger deployment runs the same command lines under its own
supervisor (systemd, Kubernetes), with more web workers and one `gpu` worker per GPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: list[str]


def web(host: str, port: int, workers: int | None = None, threads: int = 2, access_log: bool = False) -> ProcessSpec:
    """gunicorn with two processes per core: a request that waits on the database leaves the core to another
    process instead of to a thread of the same interpreter (measured by bench/labeling_loop.py)."""
    argv = [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"{host}:{port}",
            "--workers", str(workers or 2 * (os.cpu_count() or 1)), "--threads", str(threads), "--timeout", "120"]
    if access_log:
        argv += ["--access-logfile", "-"]
    return ProcessSpec("web", argv)


def default_worker(concurrency: int = 2) -> ProcessSpec:
    return ProcessSpec(
        "worker-default",
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--queues", "default", "--hostname", "default@%h",
         "--concurrency", str(concurrency), "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
    )


def gpu_worker() -> ProcessSpec:
    # One job at a time, and a fresh process per job: vLLM and CUDA give memory back only when the process exits.
    return ProcessSpec(
        "worker-gpu",
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--queues", "gpu", "--hostname", "gpu@%h",
         "--concurrency", "1", "--max-tasks-per-child", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
    )


def beat() -> ProcessSpec:
    """Celery beat: sends the periodic tasks (the dead-job reaper, see CELERY_BEAT_SCHEDULE) to the default queue."""
    return ProcessSpec(
        "beat", [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"],
    )


def run_together(specs: list[ProcessSpec], on_started: Callable[[], None] = lambda: None) -> int:
    """Start every process, stop them all when one exits or on Ctrl-C / SIGTERM. Returns the exit code."""
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "PYTHONUNBUFFERED": "1"}
    running = {spec.name: subprocess.Popen(spec.argv, env=env) for spec in specs}
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    on_started()
    exit_code = 0
    while not stopping:
        exited = [(name, proc.returncode) for name, proc in running.items() if proc.poll() is not None]
        if exited:
            name, code = exited[0]
            print(f"{name} exited with code {code}; stopping the others.", file=sys.stderr)
            exit_code = code or 1
            break
        time.sleep(0.5)
    _terminate(running.values())
    return exit_code


def _terminate(processes, grace_seconds: float = 15.0) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace_seconds
    for proc in processes:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
