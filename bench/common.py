"""Helpers shared by the bench scripts (imported as `common`: each script runs as `python bench/<name>.py`, which
puts this folder first on sys.path)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


MODEL_NAME = "smollm2-135m-instruct"  # generation.services.DEFAULT_MODEL_NAME
_REPO = Path(__file__).resolve().parent.parent
# Built copies of the default model, looked for in this order: the app's, the benches', the tests'.
MODEL_PLACES = [_REPO / "var" / "models" / MODEL_NAME, _REPO / "var" / "bench" / "models" / MODEL_NAME, _REPO / "var" / "test" / "models" / MODEL_NAME]
CACHE_MODEL = _REPO / "var" / "bench" / "models" / MODEL_NAME  # where a bench builds it when there is none


def default_model_folder() -> Path:
    """A built copy of the default model (MODEL_PLACES), else one built into CACHE_MODEL, once. The caller has put
    the repository first on sys.path (the apps are imported)."""
    from generation.backends.default_model import build, is_built

    for place in MODEL_PLACES:
        if is_built(place):
            return place
    print(f"Building the default model into {CACHE_MODEL} (once; about 40 s) ...", flush=True)
    CACHE_MODEL.parent.mkdir(parents=True, exist_ok=True)
    return build(CACHE_MODEL)


class BenchError(Exception):
    """The benchmark cannot go on (a subprocess failed, a check did not hold, the server did not start, ...)."""


def cpu_calibration() -> float:
    """Milliseconds of a fixed pure-Python workload, best of 5 (lower is faster): compares this machine's speed
    between runs (a shared virtual machine can be markedly slower from one minute to the next)."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        sum(i * i for i in range(300_000))
        best = min(best, time.perf_counter() - started)
    return 1000 * best


def postgres_create(admin_url: str, name: str) -> str:
    """Create the database ``name`` through the server of ``admin_url``; return its URL. Fails if it exists."""
    import psycopg

    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise BenchError(
            f"cannot reach PostgreSQL at {admin_url}: {exc}\n(start it with: "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start)"
        ) from exc
    except psycopg.Error as exc:
        raise BenchError(f"cannot create the PostgreSQL database {name}: {exc}") from exc
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


def postgres_drop(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, /proc/stat) since boot."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_subprocess(name: str, argv: list[str], env: dict, logs: Path, *, cwd: Path, timeout: float, tail_lines: int = 20) -> float:
    """Run a subprocess with its output in log files under ``logs``; returns its wall time. A failure raises
    BenchError with the end of its stderr."""
    started = time.perf_counter()
    with open(logs / f"{name}.stdout", "wb") as stdout, open(logs / f"{name}.stderr", "wb") as stderr:
        try:
            process = subprocess.run(argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{name} did not finish within {timeout} s") from exc
    if process.returncode != 0:
        tail = "\n".join((logs / f"{name}.stderr").read_text(errors="replace").strip().splitlines()[-tail_lines:])
        raise BenchError(f"{name} failed (exit status {process.returncode}):\n{tail}")
    return time.perf_counter() - started
