"""Benchmark of the labeler loop over HTTP: ``GET /api/projects/<slug>/next/`` then ``POST /api/items/<id>/ranking/``.

What it runs, from the repository root, against a production-style server:

* PostgreSQL: a dedicated database ``bench_labeling_<pid>`` is created on the server of ``--database-url`` (which is
  only used to connect), migrated with ``manage.py migrate``, and dropped at the end (``--keep`` keeps it, with the
  temporary directory: data dir, gunicorn log, load-generator results).
* Setup (not measured), in a small Django script: one project (K=4, ``--rankings-per-item``, default 2 so that two
  labelers share every item and the lease logic has to keep slots apart), ``--items`` prompts each with 4 generated
  candidates of one ModelVersion and one RankingItem (bulk_create), ``--labelers`` users in the ``labeler`` role
  (``annotation.services.user_create``; a fast password hasher for the setup only, since the API authenticates by
  token) each with a DRF token. Then ``VACUUM ANALYZE`` of the bench database, so the planner has statistics for
  the bulk-loaded tables as it would in a live database (the local server runs with autovacuum off).
* Server: gunicorn started as ``config.processes.web`` starts it (``python -m gunicorn config.wsgi:application
  --workers W --threads T --access-logfile - --timeout 120``, access log into a file), on a free 127.0.0.1 port,
  with DATABASE_URL and a temporary PREFLOOP_DATA_DIR; stopped at the end whatever happens.
* Load generator: a separate process (this script with a hidden flag), one asyncio event loop, raw HTTP/1.1 over a
  keep-alive connection per simulated labeler. A loop is GET next -> POST a random valid tiering of the returned
  response ids (ties with probability 0.2 between neighbours) -> one loop. Scenarios, in order:
    warm-up    closed loop at --concurrency for --warmup seconds (not reported, but verified);
    closed1    closed loop, 1 labeler, --duration seconds;
    closedN    closed loop, --concurrency labelers (default 16), --duration seconds;
    openR      open loop: arrivals at --rate loops/s (Poisson by default, ``--arrivals uniform`` for evenly
               spaced), each served by an idle labeler from the whole pool (--labelers); loop latency is measured
               from the *scheduled* arrival time, so waiting for a free labeler or a late scheduler is counted
               (no coordinated omission);
    baseline   closed loop at --concurrency of a trivial request on the same server: the same next-item route
               without a token (DRF answers 401 before any SQL), i.e. the middleware + DRF floor of one request.
  Latencies: per loop (next + submit) and per request. CPU time of the server (gunicorn master + workers),
  PostgreSQL (all ``postgres`` processes), the load generator itself and the whole machine is sampled around each
  scenario and reported per loop and in cores (2.0 = both cores of this machine busy). The machine's load before
  the run and a pure-Python calibration time before and after it are printed too: this is a shared virtual
  machine whose speed drifts, so compare runs only with similar calibration times.
* Checks: errors are any response other than 200/204 (next) and 201 (submit), malformed bodies, and exceptions
  (timeouts, resets). Double-serving is checked in the client (an item handed to more distinct labelers than
  rankings_per_item, or handed again to a labeler who already ranked it) and from the database afterwards (items
  with more rankings than rankings_per_item, rankings_count different from the real count, duplicate
  (item, labeler) rankings or assignments, Rankings != successful submits, any ranking whose PreferencePairs
  count differs from what its tiers imply, total pairs != the client's expectation). Exit status 1 on any error or
  failed check; missing a performance target only prints MISS.
* Finally, next + submit are replayed in-process with ``django.test.Client`` (no HTTP) against the bench database:
  ``CaptureQueriesContext`` lists the statements each endpoint runs, and the median time of each statement (an
  execute wrapper, finer than Django's millisecond query log) and of the whole request over 30 loops splits a
  request into database time and Python time (``--show-sql`` prints the statements in full, ``--profile`` adds a
  cProfile summary of 30 in-process loops).

    .venv/bin/python bench/labeling_loop.py                           # defaults: about 2 minutes
    .venv/bin/python bench/labeling_loop.py --items 50000 --duration 60 --rate 100 --workers 3 --threads 8

The last line printed is ``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

from common import BenchError, cpu_calibration, postgres_create, postgres_drop

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable  # run this script with the project's virtualenv: the subprocesses use the same interpreter
SLUG = "bench-labeling"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
TIE_PROBABILITY = 0.2
REQUEST_TIMEOUT = 30.0
IDLE_RECONNECT = 1.5  # gunicorn closes keep-alive connections idle for 2 s (--keep-alive default)
TARGET_CLOSED_LOOPS_PER_S = 100
TARGET_OPEN_P95_MS = 50


# --- Django scripts (run as subprocesses with DJANGO_SETTINGS_MODULE=config.settings) -----------------------------

SETUP_CODE = r"""
import json, random, sys, time
import django
django.setup()
from django.db import transaction
from django.test.utils import override_settings
from rest_framework.authtoken.models import Token
from annotation import services
from annotation.importing import content_hash
from annotation.models import Prompt, RankingItem
from annotation.roles import ADMIN, LABELER
from generation.models import Candidate, ModelVersion

# {slug, items, labelers, rankings_per_item, seed} and optionally k (4), source ("bench") and admin (also make an
# admin and give its token); bench/import_while_labeling.py uses it too.
args = json.loads(sys.argv[1])
rng = random.Random(args["seed"])
WORDS = ('the a model answer question explain write summarize list compare data user system function python code '
         'error request response example table number value because however therefore please briefly detail step '
         'first second finally reason history science recipe travel budget email letter review story poem policy '
         'contract climate energy market health sleep garden music movie book city river mountain ocean planet '
         'language grammar translate french café naïve Zürich 東京 données — “quoted” with without between about').split()

def text(low, high):
    target, parts, length = rng.randint(low, high), [], 0
    while length < target:
        sentence = " ".join(rng.choices(WORDS, k=rng.randint(6, 16))).capitalize() + "."
        parts.append(sentence)
        length += len(sentence) + 1
    return " ".join(parts)

started = time.perf_counter()
K, CHUNK, SOURCE = args.get("k", 4), 1000, args.get("source", "bench")
with transaction.atomic():
    project = services.project_create(name="Bench labeling", slug=args["slug"], responses_per_item=K,
                                      rankings_per_item=args["rankings_per_item"],
                                      guidelines="Rank the **most helpful** response first; tie responses of equal quality.")
    version = ModelVersion.objects.create(name="bench-policy", base_model="org/bench-policy")
    Through = RankingItem.candidates.through
    for start in range(0, args["items"], CHUNK):
        numbers = range(start, min(start + CHUNK, args["items"]))
        prompts = []
        for number in numbers:
            messages = [{"role": "system", "content": text(60, 200)}] if rng.random() < 0.2 else []
            messages.append({"role": "user", "content": f"{text(80, 400)} (case {number})"})
            prompts.append(Prompt(project=project, messages=messages, content_hash=content_hash(messages), source=SOURCE))
        prompts = Prompt.objects.bulk_create(prompts)
        candidates = []
        for prompt in prompts:
            for n in range(K):
                body = f"{text(300, 1200)} (answer {n})"
                candidates.append(Candidate(prompt=prompt, text=body, text_hash=content_hash(body), source="generated",
                                            model_version=version, sampling={"temperature": 0.8}, num_tokens=len(body) // 4,
                                            finish_reason="stop"))
        candidates = Candidate.objects.bulk_create(candidates)
        items = RankingItem.objects.bulk_create([RankingItem(project=project, prompt=prompt) for prompt in prompts])
        Through.objects.bulk_create([
            Through(rankingitem_id=item.pk, candidate_id=candidate.pk)
            for index, item in enumerate(items) for candidate in candidates[index * K:(index + 1) * K]
        ])
data_seconds = time.perf_counter() - started

# Token authentication never checks a password: a fast hasher keeps 64 user_create calls from taking a minute.
with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
    users = [services.user_create(username=f"bench-labeler-{n:04d}", password=f"pw-bench-{n}", role=LABELER)
             for n in range(args["labelers"])]
    admin = services.user_create(username="bench-admin", password="pw-bench-admin", role=ADMIN) if args.get("admin") else None
tokens = [Token.objects.create(user=user).key for user in users]
print(json.dumps({
    "items": RankingItem.objects.filter(project=project).count(),
    "candidates": Candidate.objects.filter(prompt__project=project).count(),
    "rankings_per_item": project.rankings_per_item, "k": project.responses_per_item,
    "tokens": tokens, "admin_token": Token.objects.create(user=admin).key if admin else None,
    "data_seconds": data_seconds, "seconds": time.perf_counter() - started,
}))
"""

VERIFY_CODE = r"""
import json, sys
import django
django.setup()
from django.db.models import Count, F
from annotation.models import Assignment, PreferencePair, Project, Ranking, RankingItem

project = Project.objects.get(slug=sys.argv[1])
items = RankingItem.objects.filter(project=project)
rankings = Ranking.objects.filter(item__project=project)
assignments = Assignment.objects.filter(item__project=project)
pairs = PreferencePair.objects.filter(project=project, source=PreferencePair.Source.HUMAN)
per_ranking = dict(pairs.order_by().values_list("ranking").annotate(n=Count("id")))
wrong_pairs = 0
for ranking_id, tiers in rankings.values_list("id", "tiers"):
    sizes = [len(tier) for tier in tiers]
    expected = (sum(sizes) ** 2 - sum(size * size for size in sizes)) // 2
    wrong_pairs += per_ranking.get(ranking_id, 0) != expected
print(json.dumps({
    "rankings": rankings.count(),
    "pairs": pairs.count(),
    "items_ranked": items.filter(rankings_count__gt=0).count(),
    "items_over_limit": items.annotate(n=Count("rankings")).filter(n__gt=project.rankings_per_item).count(),
    "items_count_mismatch": items.annotate(n=Count("rankings")).exclude(n=F("rankings_count")).count(),
    "duplicate_rankings": rankings.order_by().values("item", "labeler").annotate(n=Count("id")).filter(n__gt=1).count(),
    "duplicate_assignments": assignments.order_by().values("item", "labeler").annotate(n=Count("id")).filter(n__gt=1).count(),
    "assignments_submitted": assignments.filter(status=Assignment.Status.SUBMITTED).count(),
    "assignments_leased": assignments.filter(status=Assignment.Status.LEASED).count(),
    "rankings_wrong_pairs": wrong_pairs,
    "pairs_wrong_labeler_or_k": pairs.exclude(labeler=F("ranking__labeler"), k=project.responses_per_item).count(),
}))
"""

QUERIES_CODE = r"""
import cProfile, io, json, pstats, random, statistics, sys, time
import django
django.setup()
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

args = json.loads(sys.argv[1])
client = Client(HTTP_AUTHORIZATION=f"Token {args['token']}", HTTP_HOST="127.0.0.1")
rng = random.Random(7)
next_path = f"/api/projects/{args['slug']}/next/"

# Exact time of every statement (Django's own query log rounds to the millisecond). psycopg 3 sends the BEGIN of a
# transaction right before its first statement, so that round trip is inside the first statement's time.
timeline = []
def record(execute, sql, params, many, context):
    started = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        timeline.append(time.perf_counter() - started)
connection.ensure_connection()
plain_commit = connection._commit
def timed_commit():
    started = time.perf_counter()
    try:
        return plain_commit()
    finally:
        timeline.append(time.perf_counter() - started)
connection._commit = timed_commit

def request(kind, item=None, tiers=None):
    if kind == "next":
        return client.get(next_path)
    return client.post(f"/api/items/{item}/ranking/", data=json.dumps({"tiers": tiers}), content_type="application/json")

def tiers_of(body):
    ids = [r["key"] for r in body["responses"]]
    rng.shuffle(ids)
    return [[i] for i in ids]

def one_loop(samples=None):
    timings = {}
    for kind in ("next", "rank"):
        timeline.clear()
        started = time.perf_counter()
        response = request(kind, *(() if kind == "next" else (body["item"], tiers_of(body))))
        elapsed = time.perf_counter() - started
        assert response.status_code == (200 if kind == "next" else 201), (response.status_code, response.content[:300])
        if kind == "next":
            body = response.json()
        if samples is not None:
            samples[kind].append((elapsed, list(timeline)))

with connection.execute_wrapper(record):
    one_loop()
    one_loop()  # warm: imports, permission caches, this connection's prepared plans
    report = {}
    body = None
    for kind in ("next", "rank"):
        with CaptureQueriesContext(connection) as captured:
            response = request(kind, *(() if kind == "next" else (body["item"], tiers_of(body))))
        if kind == "next":
            body = response.json()
        report[kind] = {"status": response.status_code, "statements": [q["sql"] for q in captured.captured_queries]}
    samples = {"next": [], "rank": []}
    for _ in range(args["loops"]):
        one_loop(samples)
for kind, runs in samples.items():
    width = statistics.mode(len(timeline) for _, timeline in runs)
    same = [timeline for _, timeline in runs if len(timeline) == width]
    report[kind]["request_ms"] = 1000 * statistics.median(elapsed for elapsed, _ in runs)
    report[kind]["database_ms"] = 1000 * statistics.median(sum(timeline) for _, timeline in runs)
    report[kind]["statement_ms"] = [1000 * statistics.median(column) for column in zip(*same)]
if args["profile"]:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args["loops"]):
        one_loop()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(35)
    stats.sort_stats("tottime").print_stats(25)
    report["profile"] = out.getvalue()
print(json.dumps(report))
"""


# --- load generator (its own process) -------------------------------------------------------------------------------


class Closed(ConnectionError):
    """The server closed the connection before sending a status line."""


class Connection:
    """One keep-alive HTTP/1.1 connection, as a browser or an API client library would hold."""

    def __init__(self, host: str, port: int, stats: dict):
        self.host, self.port, self.stats = host, port, stats
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: str, body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{headers}"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        data = (head + "\r\n").encode() + body
        for attempt in range(2):
            fresh = self.writer is None or time.perf_counter() - self.last_used > IDLE_RECONNECT
            if fresh:
                await self.close()
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.stats["connects"] += 1
            try:
                self.writer.write(data)
                await self.writer.drain()
                status_line = await self.reader.readline()
                if not status_line:
                    raise Closed("connection closed before the response")
            except (ConnectionError, OSError):
                await self.close()
                if fresh or attempt:
                    raise
                self.stats["retries_on_stale_connection"] += 1  # an idle keep-alive connection the server had closed
                continue
            result = await self._read_rest(status_line)
            self.last_used = time.perf_counter()
            return result
        raise AssertionError("unreachable")

    async def _read_rest(self, status_line: bytes) -> tuple[int, bytes]:
        status = int(status_line.split(None, 2)[1])
        length, chunked, close = None, False, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value:
                chunked = True
            elif name == b"connection" and value == b"close":
                close = True
        if status in (204, 304) or status < 200:
            body = b""
        elif chunked:
            parts = []
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            body = b"".join(parts)
        elif length is not None:
            body = await self.reader.readexactly(length)
        else:
            body, close = await self.reader.read(), True
        if close:
            await self.close()
        return status, body


class Labeler:
    def __init__(self, index: int, token: str, host: str, port: int, stats: dict):
        self.index = index
        self.auth = f"Authorization: Token {token}\r\nAccept: application/json\r\n"
        self.conn = Connection(host, port, stats)
        self.ranked: set[int] = set()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary_ms(values: list[float]) -> dict:
    return {f"p{int(q * 100)}": (None if (v := percentile(values, q)) is None else 1000 * v) for q in (0.5, 0.95, 0.99)} | {
        "max": 1000 * max(values) if values else None,
        "n": len(values),
    }


def random_tiers(rng: random.Random, ids: list[str]) -> list[list[str]]:
    """A random ranking of the response keys (letters) an item showed."""
    order = ids[:]
    rng.shuffle(order)
    tiers = [[order[0]]]
    for response in order[1:]:
        if rng.random() < TIE_PROBABILITY:
            tiers[-1].append(response)
        else:
            tiers.append([response])
    return tiers


def pairs_of(tiers: list[list[str]]) -> int:
    sizes = [len(tier) for tier in tiers]
    return (sum(sizes) ** 2 - sum(size * size for size in sizes)) // 2


class CpuMeter:
    """CPU seconds of the server, PostgreSQL, this process and the machine, between two snapshots.

    A process's children_user/children_system hold the CPU of its children that have exited and been reaped, so
    counting them on the gunicorn master and the postmaster keeps the totals monotonic when a worker restarts or a
    PostgreSQL backend exits (CONN_MAX_AGE closes each server connection after 60 s)."""

    def __init__(self, server_pid: int):
        import psutil

        self.psutil = psutil
        self.server_pid = server_pid

    def _cpu(self, process, with_children: bool) -> float:
        try:
            times = process.cpu_times()
        except self.psutil.Error:
            return 0.0
        total = times.user + times.system
        if with_children:
            total += times.children_user + times.children_system
        return total

    def _tree(self, pid: int) -> float:
        try:
            root = self.psutil.Process(pid)
            return self._cpu(root, True) + sum(self._cpu(child, False) for child in root.children(recursive=True))
        except self.psutil.Error:
            return 0.0

    def _postgres(self) -> float:
        total = 0.0
        for process in self.psutil.process_iter(["name", "ppid"]):
            if process.info["name"] in ("postgres", "postmaster"):
                parent_is_postgres = False
                try:
                    parent_is_postgres = self.psutil.Process(process.info["ppid"]).name() in ("postgres", "postmaster")
                except self.psutil.Error:
                    pass
                total += self._cpu(process, not parent_is_postgres)  # the postmaster carries its reaped backends
        return total

    def snapshot(self) -> dict:
        import resource

        own = resource.getrusage(resource.RUSAGE_SELF)
        machine = self.psutil.cpu_times()
        idle = machine.idle + getattr(machine, "iowait", 0.0)
        return {
            "wall": time.perf_counter(), "server": self._tree(self.server_pid), "postgres": self._postgres(),
            "loadgen": own.ru_utime + own.ru_stime, "busy": sum(machine) - idle - getattr(machine, "guest", 0.0) - getattr(machine, "guest_nice", 0.0),
        }

    @staticmethod
    def cores(before: dict, after: dict) -> dict:
        wall = after["wall"] - before["wall"]
        return {key: (after[key] - before[key]) / wall for key in ("server", "postgres", "loadgen", "busy")}


class Scenario:
    def __init__(self, name: str):
        self.name = name
        self.loop, self.next, self.rank, self.wait = [], [], [], []
        self.loops = self.submits = self.empty = self.errors = self.expected_pairs = self.pair_mismatch = 0
        self.served_twice = 0
        self.error_samples: list[str] = []
        self.started = self.finished = 0.0
        self.scheduled = 0
        self.max_schedule_lag = 0.0

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(message[:300])

    def result(self, cpu: dict) -> dict:
        elapsed = self.finished - self.started
        return {
            "name": self.name, "elapsed_s": elapsed, "loops": self.loops, "loops_per_s": self.loops / elapsed if elapsed else 0.0,
            "submits": self.submits, "empty": self.empty, "errors": self.errors, "error_samples": self.error_samples,
            "expected_pairs": self.expected_pairs, "pair_mismatch": self.pair_mismatch, "served_twice": self.served_twice,
            "loop_ms": summary_ms(self.loop), "next_ms": summary_ms(self.next), "rank_ms": summary_ms(self.rank),
            "wait_ms": summary_ms(self.wait), "scheduled": self.scheduled, "max_schedule_lag_ms": 1000 * self.max_schedule_lag,
            "cpu_cores": cpu,
        }


class LoadGenerator:
    def __init__(self, spec: dict):
        self.spec = spec
        self.rng = random.Random(spec["seed"])
        self.conn_stats = {"connects": 0, "retries_on_stale_connection": 0}
        self.labelers = [Labeler(n, token, spec["host"], spec["port"], self.conn_stats) for n, token in enumerate(spec["tokens"])]
        self.next_path = f"/api/projects/{spec['slug']}/next/"
        self.served: dict[int, set[int]] = {}
        self.rpi = spec["rankings_per_item"]
        self.cpu = CpuMeter(spec["server_pid"])

    async def one_loop(self, labeler: Labeler, sc: Scenario, scheduled: float | None = None) -> None:
        t0 = time.perf_counter()
        try:
            status, body = await asyncio.wait_for(labeler.conn.request("GET", self.next_path, labeler.auth), REQUEST_TIMEOUT)
            t1 = time.perf_counter()
            sc.next.append(t1 - t0)
            if status == 204:
                sc.empty += 1
                return
            if status != 200:
                sc.error(f"GET next -> {status}: {body[:200]!r}")
                return
            data = json.loads(body)
            item, ids = data["item"], [response["key"] for response in data["responses"]]
            if len(ids) != self.spec["k"] or len(set(ids)) != len(ids):
                sc.error(f"GET next -> item {item} with responses {ids}")
                return
            if item in labeler.ranked:
                sc.served_twice += 1  # handed again to a labeler who already ranked it
            holders = self.served.setdefault(item, set())
            if labeler.index not in holders:
                holders.add(labeler.index)
                if len(holders) > self.rpi:
                    sc.served_twice += 1  # more distinct labelers than the item has slots
            tiers = random_tiers(self.rng, ids)
            payload = json.dumps({"tiers": tiers}).encode()
            status, body = await asyncio.wait_for(
                labeler.conn.request("POST", f"/api/items/{item}/ranking/", labeler.auth, payload), REQUEST_TIMEOUT
            )
            t2 = time.perf_counter()
            sc.rank.append(t2 - t1)
            if status != 201:
                sc.error(f"POST ranking of item {item} -> {status}: {body[:200]!r}")
                return
            expected = pairs_of(tiers)
            if json.loads(body).get("pairs") != expected:
                sc.pair_mismatch += 1
            labeler.ranked.add(item)
            sc.submits += 1
            sc.expected_pairs += expected
            sc.loops += 1
            sc.loop.append(t2 - (scheduled if scheduled is not None else t0))
        except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
            await labeler.conn.close()
            sc.error(f"{type(exc).__name__}: {exc}")

    async def closed(self, name: str, concurrency: int, duration: float) -> dict:
        sc = Scenario(name)
        before = self.cpu.snapshot()
        sc.started = time.perf_counter()
        deadline = sc.started + duration

        async def run(labeler: Labeler) -> None:
            while time.perf_counter() < deadline:
                await self.one_loop(labeler, sc)
                if sc.empty:  # the queue ran dry for someone: stop rather than measure 204s
                    break

        await asyncio.gather(*(run(labeler) for labeler in self.labelers[:concurrency]))
        sc.finished = time.perf_counter()
        return sc.result(CpuMeter.cores(before, self.cpu.snapshot()))

    async def open(self, name: str, rate: float, duration: float, poisson: bool) -> dict:
        sc = Scenario(name)
        idle: asyncio.Queue[Labeler] = asyncio.Queue()
        for labeler in self.labelers:
            idle.put_nowait(labeler)
        # Exactly round(rate * duration) arrivals, so the offered rate is the requested one. Poisson: the arrival
        # times of a Poisson process given its count are independent uniform times, sorted (bursts included).
        count = max(1, round(rate * duration))
        schedule_rng = random.Random(self.spec["seed"] + 1)
        if poisson:
            offsets = sorted(schedule_rng.uniform(0, duration) for _ in range(count))
        else:
            offsets = [n / rate for n in range(count)]
        sc.scheduled = count

        async def arrival(scheduled: float) -> None:
            labeler = await idle.get()
            sc.wait.append(time.perf_counter() - scheduled)
            try:
                await self.one_loop(labeler, sc, scheduled=scheduled)
            finally:
                idle.put_nowait(labeler)

        before = self.cpu.snapshot()
        sc.started = time.perf_counter()
        tasks = []
        for offset in offsets:
            scheduled = sc.started + offset
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sc.max_schedule_lag = max(sc.max_schedule_lag, time.perf_counter() - scheduled)
            tasks.append(asyncio.create_task(arrival(scheduled)))
        await asyncio.gather(*tasks)
        # The schedule spans `duration`: a server that keeps up achieves the offered rate, not more.
        sc.finished = max(time.perf_counter(), sc.started + duration)
        return sc.result(CpuMeter.cores(before, self.cpu.snapshot()))

    async def baseline(self, name: str, concurrency: int, duration: float) -> dict:
        """Closed loop of single requests on the next-item route without a token: 401 before any SQL."""
        sc = Scenario(name)
        conns = [Connection(self.spec["host"], self.spec["port"], self.conn_stats) for _ in range(concurrency)]
        headers = "Accept: application/json\r\n"
        before = self.cpu.snapshot()
        sc.started = time.perf_counter()
        deadline = sc.started + duration

        async def run(conn: Connection) -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    status, body = await asyncio.wait_for(conn.request("GET", self.next_path, headers), REQUEST_TIMEOUT)
                except Exception as exc:  # noqa: BLE001
                    await conn.close()
                    sc.error(f"{type(exc).__name__}: {exc}")
                    continue
                if status != 401:
                    sc.error(f"baseline GET -> {status}: {body[:200]!r}")
                sc.loops += 1
                sc.loop.append(time.perf_counter() - t0)

        await asyncio.gather(*(run(conn) for conn in conns))
        sc.finished = time.perf_counter()
        for conn in conns:
            await conn.close()
        return sc.result(CpuMeter.cores(before, self.cpu.snapshot()))

    async def run(self) -> dict:
        spec, results = self.spec, []
        concurrency = spec["concurrency"]
        plan = [
            ("warm-up", lambda: self.closed("warm-up", concurrency, spec["warmup"])),
            ("closed1", lambda: self.closed("closed1", 1, spec["duration"])),
            (f"closed{concurrency}", lambda: self.closed(f"closed{concurrency}", concurrency, spec["duration"])),
            (f"open{spec['rate']:g}", lambda: self.open(f"open{spec['rate']:g}", spec["rate"], spec["duration"], spec["arrivals"] == "poisson")),
        ]
        if spec["baseline_duration"] > 0:
            plan.append(("baseline", lambda: self.baseline("baseline", concurrency, spec["baseline_duration"])))
        for name, start in plan:
            print(f"  running {name} ...", flush=True)
            results.append(await start())
            await asyncio.sleep(0.5)  # let the server settle between scenarios
        for labeler in self.labelers:
            await labeler.conn.close()
        return {"scenarios": results, "connections": self.conn_stats}


def loadgen_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    result = asyncio.run(LoadGenerator(spec).run())
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


# --- orchestration --------------------------------------------------------------------------------------------------


def postgres_settings(url: str) -> dict[str, str]:
    import psycopg

    names = ("server_version", "autovacuum", "synchronous_commit", "shared_buffers", "max_connections")
    with psycopg.connect(url) as connection:
        return {name: connection.execute(f"SHOW {name}").fetchone()[0] for name in names}


def postgres_vacuum_analyze(url: str) -> None:
    """Planner statistics for the bulk-loaded tables, as autovacuum would have gathered in a live database."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")


def run_django(name: str, code: str, argument: str, env: dict, logs: Path) -> dict:
    """Run a Django script; its last stdout line is JSON."""
    process = subprocess.run([PYTHON, "-c", code, argument], cwd=REPO, env=env, capture_output=True, text=True)
    (logs / f"{name}.stdout").write_text(process.stdout)
    (logs / f"{name}.stderr").write_text(process.stderr)
    if process.returncode != 0:
        tail = "\n".join(process.stderr.strip().splitlines()[-15:])
        raise BenchError(f"{name} failed (exit status {process.returncode}):\n{tail}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gunicorn_argv(port: int, workers: int, threads: int) -> list[str]:
    # What `manage.py serve` runs (config.processes.web), bound to a free local port.
    sys.path.insert(0, str(REPO))
    from config.processes import web

    return web("127.0.0.1", port, workers=workers, threads=threads).argv


def wait_ready(server: subprocess.Popen, port: int, workers: int, log: Path, timeout: float = 60.0) -> float:
    """Until every worker has booted and the app answers; returns the seconds it took."""
    import http.client

    started = time.perf_counter()
    answered = 0
    while time.perf_counter() - started < timeout:
        if server.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-20:])
            raise BenchError(f"gunicorn exited with status {server.returncode}:\n{tail}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", f"/api/projects/{SLUG}/next/")
            connection.getresponse().read()
            connection.close()
            answered += 1
        except OSError:
            time.sleep(0.2)
            continue
        if answered >= 2 * workers and log.read_text(errors="replace").count("Booting worker") >= workers:
            return time.perf_counter() - started
        time.sleep(0.1)
    raise BenchError(f"gunicorn did not answer within {timeout:.0f} s (see {log})")


def stop(server: subprocess.Popen | None) -> None:
    if server is None or server.poll() is not None:
        return
    server.terminate()  # SIGTERM: gunicorn's graceful shutdown of the master and its workers
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def machine_busy_cores(seconds: float) -> float:
    import psutil

    def busy() -> tuple[float, float]:
        times = psutil.cpu_times()
        idle = times.idle + getattr(times, "iowait", 0.0)
        return sum(times) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0), time.perf_counter()

    before, started = busy()
    time.sleep(seconds)
    after, finished = busy()
    return (after - before) / (finished - started)


def other_cores(cpu: dict) -> float:
    return max(0.0, cpu["busy"] - cpu["server"] - cpu["postgres"] - cpu["loadgen"])


def fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def triple(summary: dict) -> str:
    return "/".join(fmt(summary[key]) for key in ("p50", "p95", "p99"))


def print_report(setup: dict, server_info: str, load: dict, checks: dict, queries: dict | None, show_sql: bool) -> None:
    scenarios = load["scenarios"]
    print(f"\n{server_info}")
    print(
        f"{'scenario':<10} {'loops':>6} {'loops/s':>8} {'loop p50/p95/p99 ms':>21} {'next p50/p95/p99':>18} "
        f"{'submit p50/p95/p99':>19} {'err':>4} | {'CPU ms per loop: server':>23} {'pg':>5} {'loadgen':>7} | {'cores busy':>10} {'other':>5}"
    )
    for s in scenarios:
        cpu, rate = s["cpu_cores"], s["loops_per_s"]
        per_loop = {key: (1000 * cpu[key] / rate if rate else None) for key in ("server", "postgres", "loadgen")}
        print(
            f"{s['name']:<10} {s['loops']:>6} {rate:>8.1f} {triple(s['loop_ms']):>21} {triple(s['next_ms']):>18} "
            f"{triple(s['rank_ms']):>19} {s['errors']:>4} | {fmt(per_loop['server'], 1):>23} {fmt(per_loop['postgres'], 1):>5} "
            f"{fmt(per_loop['loadgen'], 2):>7} | {cpu['busy']:>10.2f} {other_cores(cpu):>5.2f}"
        )
    print("(baseline: one request per 'loop' - GET next without a token, answered 401 by DRF before any SQL. 'CPU ms per")
    print(" loop': CPU time of gunicorn (master + workers), of all PostgreSQL processes and of the load generator, per")
    print(f" completed loop; 'cores busy': the whole machine, of {os.cpu_count()} cores; 'other': busy cores not used by")
    print(f" the server, PostgreSQL or the load generator (kernel, other processes); load before the run: "
          f"{setup['background_cores']:.2f} cores.)")
    disturbed = [s["name"] for s in scenarios if other_cores(s["cpu_cores"]) > 0.25]
    if setup["background_cores"] > 0.25 or disturbed:
        print(f"WARNING: other work was running on this machine (before the run: {setup['background_cores']:.2f} cores; "
              f"during: {', '.join(disturbed) or '-'}); these numbers understate the server.")
    for s in scenarios:
        if s["name"].startswith("open"):
            offered = s["scheduled"] / setup["duration"]
            print(
                f"{s['name']}: {s['scheduled']} arrivals scheduled ({setup['arrivals']}, {offered:.1f}/s offered over "
                f"{setup['duration']:g} s), {s['loops']} completed; wait for an idle labeler p50/p95/p99 "
                f"{triple(s['wait_ms'])} ms; scheduler lag max {s['max_schedule_lag_ms']:.1f} ms; latency measured "
                "from the scheduled arrival"
            )
        if s["error_samples"]:
            print(f"{s['name']} errors (first {len(s['error_samples'])}): " + " | ".join(s["error_samples"]))
        if s["empty"]:
            print(f"WARNING {s['name']}: the queue ran dry ({s['empty']} x 204); use more --items")
    print(f"connections opened: {load['connections']['connects']}, "
          f"retries after a stale keep-alive connection: {load['connections']['retries_on_stale_connection']}")
    print("\nChecks (client and database):")
    for name, (value, ok) in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {value}")
    if queries:
        print("\nSQL per request: one next + one submit replayed in-process (django.test.Client, no HTTP, one thread);")
        print("times are medians of 30 in-process loops; 'database' is the time spent in psycopg calls (round trips")
        print("plus PostgreSQL's work), the rest of the request is Python (Django, DRF, the app):")
        for kind in ("next", "rank"):
            q = queries[kind]
            print(
                f"  {'GET next' if kind == 'next' else 'POST ranking'} -> {q['status']}: {len(q['statements'])} statements "
                f"(BEGIN/COMMIT/SAVEPOINT included); request {q['request_ms']:.1f} ms = database {q['database_ms']:.1f} ms "
                f"+ Python {q['request_ms'] - q['database_ms']:.1f} ms"
            )
            times = iter(q["statement_ms"])
            for n, sql in enumerate(q["statements"], 1):
                ms = "" if sql == "BEGIN" else fmt(next(times, None), 2)
                text = sql if show_sql or len(sql) <= 150 else sql[:147] + "..."
                print(f"    {n:>2}. {ms:>6} ms  {text}" if ms else f"    {n:>2}.           {text}")
        if queries.get("profile"):
            print("\ncProfile of the in-process loops:\n" + queries["profile"])


def benchmark(args: argparse.Namespace, database_url: str, workdir: Path) -> tuple[str, bool]:
    logs = workdir / "logs"
    logs.mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PREFLOOP_DATA_DIR": str(workdir / "data"),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "CELERY_BROKER_URL": "filesystem://",  # nothing here should reach the network
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PREFLOOP_DEBUG", None)  # production settings: DEBUG off, no query log in the server

    started = time.perf_counter()
    print("Migrating ...", flush=True)
    migrate = subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "--no-color"], cwd=REPO, env=env,
                             capture_output=True, text=True)
    if migrate.returncode != 0:
        raise BenchError("migrate failed:\n" + "\n".join(migrate.stderr.strip().splitlines()[-15:]))
    migrate_seconds = time.perf_counter() - started
    print(f"Creating {args.items} items and {args.labelers} labelers ...", flush=True)
    setup = run_django("setup", SETUP_CODE, json.dumps({
        "slug": SLUG, "items": args.items, "labelers": args.labelers, "rankings_per_item": args.rankings_per_item,
        "seed": args.seed,
    }), env, logs)
    tokens = setup.pop("tokens")
    postgres_vacuum_analyze(database_url)
    pg = postgres_settings(database_url)
    print(
        f"Setup: migrate {migrate_seconds:.1f} s; {setup['items']} items (K={setup['k']}, rankings_per_item="
        f"{setup['rankings_per_item']}, {setup['candidates']} candidates) in {setup['data_seconds']:.1f} s, "
        f"{len(tokens)} labelers with tokens; total {setup['seconds']:.1f} s", flush=True,
    )

    port = free_port()
    server_log = logs / "gunicorn.log"
    server = None
    try:
        with open(server_log, "wb") as log:
            server = subprocess.Popen(gunicorn_argv(port, args.workers, args.threads), cwd=REPO, env=env,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        ready = wait_ready(server, port, args.workers, server_log)
        background = machine_busy_cores(2.0)
        calibration_before = cpu_calibration()
        print(f"gunicorn ready on 127.0.0.1:{port} in {ready:.1f} s ({args.workers} workers x {args.threads} threads)",
              flush=True)
        spec_path, out_path = workdir / "loadgen_spec.json", workdir / "loadgen_result.json"
        spec_path.write_text(json.dumps({
            "host": "127.0.0.1", "port": port, "slug": SLUG, "tokens": tokens, "k": setup["k"],
            "rankings_per_item": setup["rankings_per_item"], "seed": args.seed, "concurrency": args.concurrency,
            "duration": args.duration, "warmup": args.warmup, "rate": args.rate, "arrivals": args.arrivals,
            "baseline_duration": args.baseline_duration, "server_pid": server.pid, "out": str(out_path),
        }))
        print(f"Machine load with the server idle: {background:.2f} cores busy (other processes on this machine)", flush=True)
        print("Load generator (separate process, asyncio):", flush=True)
        loadgen = subprocess.run([PYTHON, str(Path(__file__).resolve()), "--loadgen", str(spec_path)], cwd=REPO)
        if loadgen.returncode != 0 or not out_path.exists():
            raise BenchError(f"the load generator failed (exit status {loadgen.returncode})")
        load = json.loads(out_path.read_text())
        calibration_after = cpu_calibration()
    finally:
        stop(server)

    # --- checks ---
    print("Verifying the database ...", flush=True)
    db = run_django("verify", VERIFY_CODE, SLUG, env, logs)
    scenarios = load["scenarios"]
    labeling = [s for s in scenarios if s["name"] != "baseline"]
    errors = sum(s["errors"] for s in scenarios)
    submits = sum(s["submits"] for s in labeling)
    expected_pairs = sum(s["expected_pairs"] for s in labeling)
    client_twice = sum(s["served_twice"] for s in labeling)
    db_twice = db["items_over_limit"] + db["duplicate_rankings"] + db["duplicate_assignments"]
    served_twice = client_twice + db_twice
    empty = sum(s["empty"] for s in labeling)
    checks = {
        "errors (non-2xx other than 204, exceptions, bad bodies)": (errors, errors == 0),
        "items served twice, seen by the client": (client_twice, client_twice == 0),
        "items with more rankings than rankings_per_item": (db["items_over_limit"], db["items_over_limit"] == 0),
        "duplicate (item, labeler) rankings / assignments": (
            f"{db['duplicate_rankings']} / {db['duplicate_assignments']}",
            db["duplicate_rankings"] == 0 and db["duplicate_assignments"] == 0,
        ),
        "rankings in the database == successful submits": (f"{db['rankings']} vs {submits}", db["rankings"] == submits),
        "submitted assignments == rankings": (f"{db['assignments_submitted']} vs {db['rankings']}",
                                              db["assignments_submitted"] == db["rankings"]),
        "items whose rankings_count differs from their rankings": (db["items_count_mismatch"], db["items_count_mismatch"] == 0),
        "rankings with a wrong number of pairs (db / API response)": (
            f"{db['rankings_wrong_pairs']} / {sum(s['pair_mismatch'] for s in labeling)}",
            db["rankings_wrong_pairs"] == 0 and sum(s["pair_mismatch"] for s in labeling) == 0,
        ),
        "preference pairs in the database == implied by the submitted tiers": (
            f"{db['pairs']} vs {expected_pairs}", db["pairs"] == expected_pairs),
        "pairs whose labeler or k differ from their ranking": (db["pairs_wrong_labeler_or_k"], db["pairs_wrong_labeler_or_k"] == 0),
        "leases left open (a next without a successful submit)": (db["assignments_leased"], db["assignments_leased"] == 0),
        "queue never ran dry (no 204)": (empty, empty == 0),
    }
    ok = all(passed for _, passed in checks.values())

    queries = None
    if args.queries:
        print("Replaying one loop in-process to list its SQL ...", flush=True)
        queries = run_django("queries", QUERIES_CODE, json.dumps({
            "token": tokens[-1], "slug": SLUG, "loops": 30, "profile": args.profile,
        }), env, logs)

    server_info = (
        f"Server: gunicorn {metadata.version('gunicorn')} ({args.workers} workers x {args.threads} threads, "
        f"{'gthread' if args.threads > 1 else 'sync'}), Django {metadata.version('django')}, "
        f"CONN_MAX_AGE={os.environ.get('PREFLOOP_DB_CONN_MAX_AGE', '60')}; PostgreSQL {pg['server_version'].split()[0]} "
        f"(autovacuum={pg['autovacuum']}, synchronous_commit={pg['synchronous_commit']}, shared_buffers="
        f"{pg['shared_buffers']}; VACUUM ANALYZE after the setup); {setup['items']} items, K={setup['k']}, "
        f"rankings_per_item={setup['rankings_per_item']}, {len(tokens)} labelers; load generator: 1 process, asyncio, "
        f"a keep-alive connection per labeler.\nCPU calibration (pure Python, lower is faster): {calibration_before:.1f} ms "
        f"before the load, {calibration_after:.1f} ms after"
    )
    print_report({"duration": args.duration, "arrivals": args.arrivals, "background_cores": background}, server_info, load, checks, queries, args.show_sql)

    by_name = {s["name"]: s for s in scenarios}
    closed_n = by_name[f"closed{args.concurrency}"]
    open_r = by_name[f"open{args.rate:g}"]
    baseline = by_name.get("baseline")
    baseline_rps = baseline["loops_per_s"] if baseline else None
    print("\nTargets:")
    closed_ok = closed_n["loops_per_s"] >= TARGET_CLOSED_LOOPS_PER_S
    open_ok = (open_r["loop_ms"]["p95"] or float("inf")) < TARGET_OPEN_P95_MS
    print(f"  {'PASS' if closed_ok else 'MISS'} closed loop at {args.concurrency}: {closed_n['loops_per_s']:.1f} loops/s "
          f"(target >= {TARGET_CLOSED_LOOPS_PER_S})")
    print(f"  {'PASS' if open_ok else 'MISS'} open loop at {args.rate:g}/s: p95 {fmt(open_r['loop_ms']['p95'])} ms "
          f"(target < {TARGET_OPEN_P95_MS} ms), achieved {open_r['loops_per_s']:.1f}/s")
    print(f"  {'PASS' if errors == 0 else 'FAIL'} errors: {errors}; {'PASS' if served_twice == 0 else 'FAIL'} "
          f"served twice: {served_twice}")
    if baseline_rps:
        print(
            f"  baseline ceiling {baseline_rps:.0f} requests/s: closed{args.concurrency} is "
            f"{closed_n['loops_per_s'] / baseline_rps:.1%} of it in loops/s, "
            f"{2 * closed_n['loops_per_s'] / baseline_rps:.1%} in requests/s (a loop is 2 requests)"
        )
    print()

    fields: dict[str, object] = {}
    for key, s in (("closed1", by_name["closed1"]), (f"closed{args.concurrency}", closed_n)):
        fields[f"{key}_loops_per_s"] = f"{s['loops_per_s']:.1f}"
        for q in ("p50", "p95", "p99"):
            fields[f"{key}_{q}_ms"] = fmt(s["loop_ms"][q])
    fields[f"open{args.rate:g}_achieved_per_s"] = f"{open_r['loops_per_s']:.1f}"
    for q in ("p50", "p95", "p99"):
        fields[f"open{args.rate:g}_{q}_ms"] = fmt(open_r["loop_ms"][q])
    fields["errors"] = errors
    fields["served_twice"] = served_twice
    fields["items"] = setup["items"]
    fields["baseline_requests_per_s"] = f"{baseline_rps:.1f}" if baseline_rps else "-"
    return "RESULT " + " ".join(f"{key}={value}" for key, value in fields.items()), ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=5000, help="Ranking items to create (default 5000).")
    parser.add_argument("--labelers", type=int, default=64, help="Labeler users with tokens (default 64).")
    parser.add_argument("--rankings-per-item", type=int, default=2, choices=range(1, 6), metavar="{1..5}",
                        help="Rankings each item needs (default 2).")
    parser.add_argument("--duration", type=float, default=20.0, help="Seconds of each measured scenario (default 20).")
    parser.add_argument("--warmup", type=float, default=3.0, help="Seconds of warm-up before measuring (default 3).")
    parser.add_argument("--concurrency", type=int, default=16, help="Labelers of the closed-loop scenario (default 16).")
    parser.add_argument("--rate", type=float, default=50.0, help="Offered loops/s of the open-loop scenario (default 50).")
    parser.add_argument("--arrivals", choices=("poisson", "uniform"), default="poisson",
                        help="Open-loop arrivals: Poisson (default) or evenly spaced.")
    parser.add_argument("--baseline-duration", type=float, default=10.0,
                        help="Seconds of the trivial-request baseline (default 10; 0 skips it).")
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1), help="gunicorn workers (default: 2 per core, as manage.py serve).")
    parser.add_argument("--threads", type=int, default=2, help="Threads per gunicorn worker (default 2, as manage.py serve).")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL,
                        help=f"PostgreSQL server to use (default {DEFAULT_DATABASE_URL}); only used to connect: "
                        "a database bench_labeling_<pid> is created and dropped.")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory and the database.")
    parser.add_argument("--no-queries", dest="queries", action="store_false", help="Skip the in-process SQL listing.")
    parser.add_argument("--show-sql", action="store_true", help="Print the SQL statements in full.")
    parser.add_argument("--profile", action="store_true", help="Also cProfile 30 in-process loops.")
    parser.add_argument("--loadgen", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loadgen:
        return args
    if urlsplit(args.database_url).scheme not in ("postgres", "postgresql"):
        parser.error("--database-url must be a PostgreSQL URL")
    if args.concurrency > args.labelers or args.items < 1 or args.rate <= 0 or args.duration <= 0:
        parser.error("need --items >= 1, --rate > 0, --duration > 0 and --concurrency <= --labelers")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.loadgen:
        return loadgen_main(args.loadgen)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the finally blocks stop gunicorn and drop the database
    workdir = Path(tempfile.mkdtemp(prefix="bench_labeling_"))
    name = f"bench_labeling_{os.getpid()}"
    created = False
    result, ok = None, False
    try:
        database_url = postgres_create(args.database_url, name)
        created = True
        result, ok = benchmark(args, database_url, workdir)
    except BenchError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
    finally:
        if args.keep:
            print(f"Kept {workdir}" + (f" and database {name}" if created else ""), flush=True)
        else:
            if created:
                postgres_drop(args.database_url, name)
            shutil.rmtree(workdir, ignore_errors=True)
    if result:
        print(result)  # last, so the RESULT line ends the output
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
