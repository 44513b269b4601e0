"""Helpers shared by the bench scripts (imported as `common`: each script runs as `python bench/<name>.py`, which
puts this folder first on sys.path)."""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit


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
