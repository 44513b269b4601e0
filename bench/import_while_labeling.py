"""Benchmark of what a big prompt import does to the labelers working at the same time, on the default embedded
setup: SQLite (WAL, IMMEDIATE transactions, 30 s busy timeout) and the filesystem Celery broker.

The same scenario runs twice, each time on a fresh copy of one set-up data directory (SQLite database + broker
folder + secret key), with its own gunicorn and Celery worker:

1. ``in_request`` - the old behaviour, the baseline: ``PREFLOOP_IMPORT_IN_REQUEST_BYTES`` is set above the file's
   size, so ``POST /api/projects/<slug>/prompts/import/`` imports the whole file within the request, in one
   transaction (answers 201 when it is all in);
2. ``background`` - the new behaviour: the default threshold (2 MB; lowered below the file's size if a small
   ``--rows`` makes the file smaller than that), so the POST answers 202 with an import job that the ``default``
   worker runs (a check pass without writes, then one transaction per chunk of 2000 rows); the admin follows it at
   ``GET /api/imports/<id>/`` every 0.2 s until it is ``succeeded``.

What it runs, from the repository root:

* Setup (once, not measured), in a Django script: ``manage.py migrate`` in a temporary ``PREFLOOP_DATA_DIR``
  (``DATABASE_URL=sqlite:///<dir>/db.sqlite3``), one project (K=2 responses per item, ``--rankings-per-item``
  rankings per item, default 2), ``--items`` prompts (default 3000) each with 2 generated candidates and one
  RankingItem (bulk_create, source ``bench-setup``), ``--labelers`` labeler users and one admin
  (``annotation.services.user_create``), each with a DRF token. The synthetic file is ``bench/import_prompts.py``'s
  generator (``write_jsonl``: ~70% prompt rows, ~20% multi-turn rows, ~10% preference rows; texts of a few hundred
  characters, every prompt distinct, deterministic from ``--seed``).
* Servers, per run: gunicorn as ``manage.py serve`` starts it (``config.processes.web``: 2 workers per core x 2
  threads, ``--workers`` / ``--threads`` to change) on a free 127.0.0.1 port, and one Celery worker on the
  ``default`` queue (``config.processes.default_worker`` with concurrency 1), with the same environment
  (``PREFLOOP_DATA_DIR``, ``DATABASE_URL``, ``CELERY_BROKER_URL`` unset, so the filesystem broker under the data
  directory is used; ``PREFLOOP_DEBUG`` unset). Both are stopped at the end of the run whatever happens.
* Load: ``--labelers`` threads in this process (``requests``, a keep-alive session and a token each) loop
  ``GET /api/projects/<slug>/next/`` -> ``POST /api/items/<id>/ranking/`` (a random strict order of the shown
  responses) as fast as they can. After ``--warmup`` seconds (default 5) the admin uploads the file (multipart
  ``file``); the labelers go on until the import is finished plus 2 s, then stop.
* Reported per run: ``upload_s`` (how long the upload POST took to answer), ``import_s`` (from sending the POST
  until every row is in: the POST itself for in_request, until the job is seen ``succeeded`` for background; the
  background run also reports ``job_run_s``, the job's own ``finished_at - started_at``, since a poll can wait for a
  free gunicorn thread behind labeler requests that wait on SQLite's write lock),
  ``labeler_max_ms`` / ``labeler_p99_ms`` / ``labeler_p50_ms`` over the labeler requests that overlapped the import
  (started before it finished and finished after it started), ``labeler_errors`` (any response other than
  200/204 for next and 201 for a ranking, or an exception such as a timeout; e.g. 500 "database is locked"),
  ``labeler_loops_during_import`` (loops completed within the import) and the loop rate before and during it.
  A timeline of the job's phases as the polls saw them and the five slowest labeler requests are printed too.
  ``stall_ratio`` is in_request's labeler_max_ms / background's.
* Checks, after each run's servers stopped (``manage.py shell -c``): the project's prompts other than the setup's
  equal ``--rows``, and its preference pairs equal the file's preference rows; the job succeeded (background) or
  the POST answered 201 with the right counts (in_request). Any failure exits with status 1. Labeler errors are
  reported, not failed on: they are what this benchmark looks for.

Run from the repository root (the defaults take about 1.5 minutes on a 2-core machine):

    .venv/bin/python bench/import_while_labeling.py
    .venv/bin/python bench/import_while_labeling.py --rows 20000 --labelers 16 --only background --keep

``--keep`` keeps the temporary directory (file, data directories, server and worker logs). The last line printed is
``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import requests

from common import BenchError, cpu_calibration
from import_prompts import write_jsonl
from labeling_loop import SETUP_CODE, free_port, run_django, stop, wait_ready

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable  # run this script with the project's virtualenv: the subprocesses use the same interpreter
SLUG = "bench-import-labeling"
SETUP_SOURCE = "bench-setup"
IMPORT_SOURCE = "bench-import"
K = 2
REQUEST_TIMEOUT = 180.0  # above gunicorn's --timeout (120 s): a request killed by gunicorn shows as an error
AFTER_IMPORT_SECONDS = 2.0
POLL_SECONDS = 0.2
RUNS = ("in_request", "background")


COUNT_CODE = r"""
import json, sys
import django
django.setup()
from annotation.models import PreferencePair, Prompt, Ranking
slug, setup_source = sys.argv[1].split(",")
prompts = Prompt.objects.filter(project__slug=slug)
print(json.dumps({
    "imported_prompts": prompts.exclude(source=setup_source).count(),
    "setup_prompts": prompts.filter(source=setup_source).count(),
    "pairs_imported": PreferencePair.objects.filter(project__slug=slug, ranking__isnull=True).count(),
    "rankings": Ranking.objects.filter(item__project__slug=slug).count(),
}))
"""


# --- labelers ------------------------------------------------------------------------------------------------------


@dataclass
class Labeler:
    """One labeler thread's record: (kind, start, end, status) per request, (start, end) per completed loop."""

    token: str
    base: str
    seed: int
    requests: list[tuple[str, float, float, int]] = field(default_factory=list)
    loops: list[tuple[float, float]] = field(default_factory=list)
    empty: int = 0
    error_samples: list[str] = field(default_factory=list)

    def run(self, stopping: threading.Event) -> None:
        rng = random.Random(self.seed)
        session = requests.Session()
        session.headers["Authorization"] = f"Token {self.token}"
        next_url = f"{self.base}/api/projects/{SLUG}/next/"
        while not stopping.is_set():
            started = time.perf_counter()
            response = self._request(session, "next", "GET", next_url)
            if response is None or response.status_code != 200:
                if response is not None and response.status_code == 204:
                    self.empty += 1
                time.sleep(0.05)  # an error or an empty queue: do not spin
                continue
            try:
                body = response.json()
                keys = [shown["key"] for shown in body["responses"]]
                item = body["item"]
            except (ValueError, KeyError, TypeError) as exc:
                self.requests[-1] = ("next", self.requests[-1][1], self.requests[-1][2], -1)
                self._note(f"next: bad body ({exc}): {response.text[:200]}")
                continue
            rng.shuffle(keys)
            rank = self._request(session, "rank", "POST", f"{self.base}/api/items/{item}/ranking/",
                                 json={"tiers": [[key] for key in keys]})
            if rank is not None and rank.status_code == 201:
                self.loops.append((started, time.perf_counter()))
            else:
                time.sleep(0.05)
        session.close()

    def _request(self, session: requests.Session, kind: str, method: str, url: str, **kwargs):
        started = time.perf_counter()
        try:
            response = session.request(method, url, timeout=REQUEST_TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            self.requests.append((kind, started, time.perf_counter(), -1))
            self._note(f"{kind}: {type(exc).__name__}: {exc}")
            return None
        self.requests.append((kind, started, time.perf_counter(), response.status_code))
        ok = {"next": (200, 204), "rank": (201,)}[kind]
        if response.status_code not in ok:
            self._note(f"{kind}: {response.status_code} {response.text[:200]!r}")
        return response

    def _note(self, text: str) -> None:
        if len(self.error_samples) < 5:
            self.error_samples.append(text)


def is_error(kind: str, status: int) -> bool:
    return status not in ((200, 204) if kind == "next" else (201,))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


# --- one run -------------------------------------------------------------------------------------------------------


def start_process(name: str, argv: list[str], env: dict, logs: Path) -> subprocess.Popen:
    with open(logs / f"{name}.log", "wb") as log:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_worker_ready(worker: subprocess.Popen, log: Path, timeout: float = 60.0) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if worker.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-20:])
            raise BenchError(f"the Celery worker exited with status {worker.returncode}:\n{tail}")
        if " ready." in log.read_text(errors="replace"):
            return time.perf_counter() - started
        time.sleep(0.2)
    raise BenchError(f"the Celery worker was not ready within {timeout:.0f} s (see {log})")


def stop_worker(worker: subprocess.Popen | None) -> None:
    if worker is None or worker.poll() is not None:
        return
    worker.send_signal(signal.SIGQUIT)  # cold shutdown: nothing is left to finish
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    try:
        os.killpg(worker.pid, signal.SIGKILL)  # its pool processes, if any were left
    except ProcessLookupError:
        pass


def upload(base: str, admin_token: str, path: Path) -> requests.Response:
    with open(path, "rb") as data:
        try:
            return requests.post(
                f"{base}/api/projects/{SLUG}/prompts/import/",
                headers={"Authorization": f"Token {admin_token}"},
                files={"file": (path.name, data, "application/x-ndjson")},
                data={"source": IMPORT_SOURCE},
                timeout=1800,
            )
        except requests.RequestException as exc:  # e.g. gunicorn killed the worker after its --timeout (120 s)
            raise BenchError(f"the upload failed: {type(exc).__name__}: {exc}") from exc


def follow_job(base: str, admin_token: str, job_id: int, timeout: float, timeline: list) -> tuple[dict, float, int]:
    """Poll the job until it finishes; returns its last state, when it was seen finished, and the polls made. Each
    change of status or phase is appended to ``timeline`` as (when it was first seen, "status/phase")."""
    session = requests.Session()
    session.headers["Authorization"] = f"Token {admin_token}"
    deadline = time.perf_counter() + timeout
    polls = 0
    last_phase = None
    while time.perf_counter() < deadline:
        response = session.get(f"{base}/api/imports/{job_id}/", timeout=REQUEST_TIMEOUT)
        polls += 1
        if response.status_code != 200:
            raise BenchError(f"GET /api/imports/{job_id}/ answered {response.status_code}: {response.text[:500]}")
        job = response.json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            timeline.append((time.perf_counter(), job["status"]))
            return job, time.perf_counter(), polls
        if (job["status"], job.get("phase")) != last_phase:
            last_phase = (job["status"], job.get("phase"))
            timeline.append((time.perf_counter(), f"{job['status']}/{job.get('phase') or '-'}"))
            print(f"    job {job_id}: {job['status']}, phase {job.get('phase') or '-'}, "
                  f"{job.get('rows_written')}/{job.get('rows_total')} rows written", flush=True)
        time.sleep(POLL_SECONDS)
    raise BenchError(f"the import job {job_id} did not finish within {timeout:.0f} s")


def one_run(name: str, args: argparse.Namespace, template: Path, workdir: Path, path: Path, expected: dict,
            setup: dict) -> dict:
    data = workdir / name / "data"
    logs = workdir / name / "logs"
    shutil.copytree(template, data)
    logs.mkdir(parents=True)
    env = dict(os.environ)
    for variable in ("CELERY_BROKER_URL", "PREFLOOP_DEBUG", "PREFLOOP_IMPORT_IN_REQUEST_BYTES"):
        env.pop(variable, None)
    env.update({
        "PREFLOOP_DATA_DIR": str(data),
        "DATABASE_URL": f"sqlite:///{data / 'db.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONUNBUFFERED": "1",
    })
    size = path.stat().st_size
    threshold_note = "default threshold (2 MB)"
    if name == "in_request":
        env["PREFLOOP_IMPORT_IN_REQUEST_BYTES"] = str(size + 1024**2)
        threshold_note = f"PREFLOOP_IMPORT_IN_REQUEST_BYTES={env['PREFLOOP_IMPORT_IN_REQUEST_BYTES']}"
    elif size <= 2 * 1024**2:
        env["PREFLOOP_IMPORT_IN_REQUEST_BYTES"] = str(size // 2)  # a small file would be imported within the request
        threshold_note = f"PREFLOOP_IMPORT_IN_REQUEST_BYTES={size // 2} (file smaller than the default 2 MB)"

    sys.path.insert(0, str(REPO))
    from config.processes import default_worker, web

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = worker = None
    labelers: list[Labeler] = []
    threads: list[threading.Thread] = []
    stopping = threading.Event()
    print(f"\n[{name}] {threshold_note}", flush=True)
    try:
        server = start_process("gunicorn", web("127.0.0.1", port, workers=args.workers, threads=args.threads).argv,
                               env, logs)
        worker = start_process("worker", default_worker(concurrency=1).argv, env, logs)
        workers = args.workers or 2 * (os.cpu_count() or 1)
        ready = wait_ready(server, port, workers, logs / "gunicorn.log")
        worker_ready = wait_worker_ready(worker, logs / "worker.log")
        print(f"  gunicorn ready in {ready:.1f} s ({workers} workers x {args.threads} threads), "
              f"Celery worker ready in {worker_ready:.1f} s", flush=True)

        labelers = [Labeler(token, base, args.seed + n) for n, token in enumerate(setup["tokens"][:args.labelers])]
        threads = [threading.Thread(target=labeler.run, args=(stopping,), daemon=True) for labeler in labelers]
        run_started = time.perf_counter()
        for thread in threads:
            thread.start()
        time.sleep(args.warmup)

        print(f"  uploading {size / 1e6:.1f} MB ({expected['rows']} rows) with {len(labelers)} labelers busy ...",
              flush=True)
        import_started = time.perf_counter()
        response = upload(base, setup["admin_token"], path)
        upload_answered = time.perf_counter()
        upload_s = upload_answered - import_started
        job_polls = 0
        job_run_s = None
        timeline = [(import_started, "upload sent"), (upload_answered, f"upload answered {response.status_code}")]
        if name == "in_request":
            if response.status_code != 201:
                raise BenchError(f"[{name}] the upload answered {response.status_code} (expected 201): "
                                 f"{response.text[:1000]}")
            report = response.json()
            if report.get("prompts_created") != expected["rows"] or report.get("pairs_created") != expected["pairs"]:
                raise BenchError(f"[{name}] import report {report} does not match the file {expected}")
            import_finished = upload_answered
        else:
            if response.status_code != 202:
                raise BenchError(f"[{name}] the upload answered {response.status_code} (expected 202): "
                                 f"{response.text[:1000]}")
            job = response.json()
            print(f"  upload answered 202 in {upload_s:.2f} s: job {job['id']} {job['status']}", flush=True)
            job, import_finished, job_polls = follow_job(base, setup["admin_token"], job["id"], args.import_timeout,
                                                    timeline)
            if job["status"] != "succeeded":
                raise BenchError(f"[{name}] the import job ended {job['status']}: {job.get('problem')}\n"
                                 f"{(job.get('error') or '')[-2000:]}")
            if job.get("prompts_created") != expected["rows"] or job.get("pairs_created") != expected["pairs"]:
                raise BenchError(f"[{name}] import job counts {job} do not match the file {expected}")
            # The job's own clock (server side): a poll can wait behind labeler requests for a gunicorn thread.
            job_run_s = (datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
                         ).total_seconds()
        import_s = import_finished - import_started
        print(f"  import finished in {import_s:.2f} s (upload request {upload_s:.2f} s"
              + (f"; the job ran {job_run_s:.2f} s from its started_at to its finished_at" if job_run_s else "")
              + ")", flush=True)
        time.sleep(AFTER_IMPORT_SECONDS)
    finally:
        stopping.set()
        for thread in threads:
            thread.join(timeout=REQUEST_TIMEOUT + 5)
        stop(server)
        stop_worker(worker)
    run_finished = time.perf_counter()

    counts = run_django(f"count-{name}", COUNT_CODE, f"{SLUG},{SETUP_SOURCE}", env, logs)
    if counts["imported_prompts"] != expected["rows"] or counts["pairs_imported"] != expected["pairs"] \
            or counts["setup_prompts"] != setup["items"]:
        raise BenchError(f"[{name}] database counts {counts} do not match: expected {expected['rows']} imported "
                         f"prompts, {expected['pairs']} imported pairs and {setup['items']} setup prompts")

    all_requests = [record for labeler in labelers for record in labeler.requests]
    during = [(kind, start, end, status) for kind, start, end, status in all_requests
              if start < import_finished and end > import_started]
    during_ms = [1000 * (end - start) for _, start, end, _ in during]
    errors = [(kind, status) for kind, _, _, status in all_requests if is_error(kind, status)]
    by_status: dict[str, int] = {}
    for kind, status in errors:
        by_status[f"{kind}:{status}"] = by_status.get(f"{kind}:{status}", 0) + 1
    loops = [loop for labeler in labelers for loop in labeler.loops]
    loops_before = sum(1 for start, end in loops if end <= import_started)
    loops_during = sum(1 for start, end in loops if import_started <= end <= import_finished)
    samples = [sample for labeler in labelers for sample in labeler.error_samples]
    result = {
        "upload_s": upload_s,
        "import_s": import_s,
        "labeler_max_ms": max(during_ms) if during_ms else None,
        "labeler_p99_ms": percentile(during_ms, 99),
        "labeler_p50_ms": percentile(during_ms, 50),
        "labeler_requests_during_import": len(during),
        "labeler_errors": len(errors),
        "labeler_errors_during_import": sum(1 for kind, _, _, status in during if is_error(kind, status)),
        "labeler_errors_by_status": by_status,
        "labeler_loops_during_import": loops_during,
        "loops_per_s_before": loops_before / (import_started - run_started),
        "loops_per_s_during": loops_during / import_s,
        "labeler_empty": sum(labeler.empty for labeler in labelers),
        "job_polls": job_polls,
        "job_run_s": job_run_s,
        "rankings": counts["rankings"],
        "seconds": run_finished - run_started,
    }
    print(f"  labelers: {loops_before} loops before the import ({result['loops_per_s_before']:.1f}/s), "
          f"{loops_during} during it ({result['loops_per_s_during']:.1f}/s); requests overlapping the import: "
          f"{len(during)}, p50 {fmt(result['labeler_p50_ms'])} ms, p99 {fmt(result['labeler_p99_ms'])} ms, "
          f"max {fmt(result['labeler_max_ms'])} ms", flush=True)
    print(f"  labeler errors: {len(errors)} ({result['labeler_errors_during_import']} during the import) "
          f"{by_status or ''}; empty queue (204): {result['labeler_empty']}", flush=True)
    for sample in samples[:5]:
        print(f"    e.g. {sample}", flush=True)
    print("  timeline (s from the upload): " + ", ".join(f"{at - import_started:.1f} {what}" for at, what in timeline)
          + f", {import_s:.1f} import finished", flush=True)
    slowest = sorted(during, key=lambda record: record[1] - record[2])[:5]
    print("  slowest labeler requests during the import (start..end s from the upload): " + ", ".join(
        f"{kind} {start - import_started:.1f}..{end - import_started:.1f} ({status})" for kind, start, end, status in slowest
    ), flush=True)
    print(f"  database: {counts['imported_prompts']} imported prompts, {counts['pairs_imported']} imported pairs, "
          f"{counts['rankings']} rankings: ok", flush=True)
    return result


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# --- main ----------------------------------------------------------------------------------------------------------


def benchmark(args: argparse.Namespace, workdir: Path) -> str:
    path = workdir / "prompts.jsonl"
    print(f"Writing {args.rows} rows to {path} ...", flush=True)
    stats = write_jsonl(path, args.rows, args.seed)
    expected = {"rows": stats.rows, "pairs": stats.preference_rows}
    print(f"  {stats.size_bytes / 1e6:.1f} MB: {stats.prompt_rows} prompt, {stats.messages_rows} messages, "
          f"{stats.preference_rows} preference rows", flush=True)

    template = workdir / "template"
    logs = workdir / "logs"
    logs.mkdir()
    env = dict(os.environ)
    for variable in ("CELERY_BROKER_URL", "PREFLOOP_DEBUG", "PREFLOOP_IMPORT_IN_REQUEST_BYTES"):
        env.pop(variable, None)
    env.update({"PREFLOOP_DATA_DIR": str(template), "DATABASE_URL": f"sqlite:///{template / 'db.sqlite3'}",
                "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONUNBUFFERED": "1"})
    started = time.perf_counter()
    print("Migrating ...", flush=True)
    migrate = subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "--no-color"], cwd=REPO, env=env,
                             capture_output=True, text=True)
    if migrate.returncode != 0:
        raise BenchError("migrate failed:\n" + "\n".join(migrate.stderr.strip().splitlines()[-15:]))
    print(f"Creating {args.items} items (K={K}, rankings_per_item={args.rankings_per_item}), {args.labelers} labelers "
          "and an admin ...", flush=True)
    setup = run_django("setup", SETUP_CODE, json.dumps({
        "slug": SLUG, "items": args.items, "labelers": args.labelers, "rankings_per_item": args.rankings_per_item,
        "seed": args.seed, "k": K, "source": SETUP_SOURCE, "admin": True,
    }), env, logs)
    print(f"  setup took {time.perf_counter() - started:.1f} s", flush=True)
    for leftover in ("db.sqlite3-wal", "db.sqlite3-shm"):  # the setup closed its connection: checkpointed
        if (template / leftover).exists() and (template / leftover).stat().st_size:
            raise BenchError(f"{template / leftover} is not empty after the setup")

    calibration_before = cpu_calibration()
    results = {}
    for name in RUNS:
        if args.only in (None, name):
            results[name] = one_run(name, args, template, workdir, path, expected, setup)
    calibration_after = cpu_calibration()

    print(f"\nCPU calibration (pure Python, lower is faster): {calibration_before:.1f} ms before, "
          f"{calibration_after:.1f} ms after; {os.cpu_count()} cores")
    header = f"{'run':<11} {'upload s':>9} {'import s':>9} {'max ms':>9} {'p99 ms':>8} {'p50 ms':>8} " \
             f"{'errors':>7} {'loops':>6} {'loops/s before':>15} {'during':>7}"
    print(header)
    for name, r in results.items():
        print(f"{name:<11} {r['upload_s']:>9.2f} {r['import_s']:>9.2f} {fmt(r['labeler_max_ms']):>9} "
              f"{fmt(r['labeler_p99_ms']):>8} {fmt(r['labeler_p50_ms']):>8} {r['labeler_errors']:>7} "
              f"{r['labeler_loops_during_import']:>6} {r['loops_per_s_before']:>15.1f} {r['loops_per_s_during']:>7.1f}")
    print("(max/p99/p50: labeler requests that overlapped the import; loops: completed while it ran)\n")

    fields: dict[str, object] = {"rows": args.rows, "file_mb": f"{stats.size_bytes / 1e6:.1f}", "labelers": args.labelers}
    for name, r in results.items():
        fields[f"{name}_upload_s"] = f"{r['upload_s']:.2f}"
        fields[f"{name}_import_s"] = f"{r['import_s']:.2f}"
        if r["job_run_s"] is not None:
            fields[f"{name}_job_run_s"] = f"{r['job_run_s']:.2f}"
        fields[f"{name}_labeler_max_ms"] = fmt(r["labeler_max_ms"])
        fields[f"{name}_labeler_p99_ms"] = fmt(r["labeler_p99_ms"])
        fields[f"{name}_labeler_errors"] = r["labeler_errors"]
        fields[f"{name}_labeler_loops_during_import"] = r["labeler_loops_during_import"]
    if len(results) == 2 and results["in_request"]["labeler_max_ms"] and results["background"]["labeler_max_ms"]:
        fields["stall_ratio"] = f"{results['in_request']['labeler_max_ms'] / results['background']['labeler_max_ms']:.1f}"
    return "RESULT " + " ".join(f"{key}={value}" for key, value in fields.items())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="Rows in the uploaded file (default 100000).")
    parser.add_argument("--labelers", type=int, default=8, help="Labeler threads (default 8).")
    parser.add_argument("--items", type=int, default=3000, help="Ranking items created before the runs (default 3000).")
    parser.add_argument("--rankings-per-item", type=int, default=2, choices=range(1, 6), metavar="{1..5}",
                        help="Rankings each item needs (default 2).")
    parser.add_argument("--warmup", type=float, default=5.0, help="Seconds of labeling before the upload (default 5).")
    parser.add_argument("--only", choices=RUNS, help="Run one scenario only.")
    parser.add_argument("--workers", type=int, default=None, help="gunicorn workers (default: 2 per core, as serve).")
    parser.add_argument("--threads", type=int, default=2, help="Threads per gunicorn worker (default 2, as serve).")
    parser.add_argument("--import-timeout", type=float, default=900.0, help="Seconds to wait for an import job.")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory.")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.labelers < 1 or args.items < 1 or args.warmup < 0:
        parser.error("need --rows, --labelers and --items >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the finally blocks stop the servers
    workdir = Path(tempfile.mkdtemp(prefix="bench_import_labeling_"))
    result = None
    try:
        result = benchmark(args, workdir)
    except BenchError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
    finally:
        if args.keep:
            print(f"Kept {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if result is None:
        return 1
    print(result)  # last, so the RESULT line ends the output
    return 0


if __name__ == "__main__":
    sys.exit(main())
