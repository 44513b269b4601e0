"""Benchmark of preference-pair exports: pairs per second and peak memory of `python manage.py export_preferences`
in `jsonl` and `parquet`, against bare scripts doing the same reads and writes without Django.

What it runs, each step a separate subprocess from the repository root, with a temporary PREFLOOP_DATA_DIR:

* prepare  - (not measured) ``manage.py migrate``, then a Django process (this file, ``--side prepare``) that inserts
             the data with ``bulk_create``: one project (K=4, two rankings per item), 12 labelers, two policy model
             versions, one prompt per ranking item (30% multi-turn with a system message; every 20th prompt marked
             held-out, so the export splits by the marked prompts), 4 generated candidates per prompt (a few hundred
             characters each, the two model versions alternating), the item with its candidates, two rankings per
             item by two different labelers (a strict order of the 4 candidates; the second labeler swaps two
             neighbours 60% of the time, so the agreement column varies), and the 6 human PreferencePairs of each
             ranking (margin = tier gap), stopping at exactly --pairs pairs. All items are active, so every pair is
             exported. Deterministic from --seed. With SQLite the prepared database is cached in var/bench/export/
             (keyed by pair count, seed, the migrations and this preparation code) and reused by later runs;
             ``--fresh`` rebuilds it.
* baseline - a bare script (this file, ``--side baseline``), no Django: one hand-written ``SELECT`` of the same
             columns with the same joins in id order through the DB-API driver (sqlite3, or a psycopg server-side
             cursor), ``fetchmany`` in chunks of 2000 like the export, and either nothing else (``select``: the cost of
             reading the rows), or the same row dicts (same keys; no labeler HMAC, no agreement, no card, no stats)
             written with the same ``json.dumps`` options (``jsonl``) or the same pyarrow schema, batches of 2000 and
             zstd (``parquet``). The ratio export/baseline is what our export path adds (ORM, agreement, pseudonyms,
             card, sha256, progress).
* export   - ``call_command("export_preferences", "bench", "--format", FORMAT, "--out", PATH)`` in a fresh process
             (this file, ``--side export``: ``django.setup()`` first, then the command exactly as ``manage.py``
             runs it, with its progress lines on stderr), once per format.

Timing: each side measures itself with ``time.perf_counter()`` around the work only, so interpreter and Django
start-up are NOT in pairs per second; start-up (interpreter launch to ``django.setup()`` done, as the parent saw it)
is printed apart. The export's time includes everything ``export_write`` does: the query, the agreement pass, the
rows, the file, its sha256 and the dataset card.

Peak memory: ``VmHWM`` from /proc/self/status read by the measured process itself just before it exits: the kernel's
high-water mark of that process's resident memory since its exec, nothing missed and nothing inherited (unlike
``ru_maxrss``, which on exec carries over the forking parent's peak; and ``RUSAGE_CHILDREN`` is a maximum over all
children reaped so far). It includes the interpreter and Django; the resident size after start-up is printed too, so
the export's own growth is peak minus that. With PostgreSQL the server's memory is not included.

Checks (any failure exits non-zero): the command's "Wrote N rows" line, the JSONL line count and the Parquet row
count equal --pairs, the number of rows in the test split equals the pairs of held-out prompts, the card exists, and
each baseline wrote as many rows. Output files are deleted after their check (1,000,000 pairs of JSONL are ~2 GB).

Other processes' CPU use during each measured run (/proc/stat minus ours, in cores) is printed and flagged above
0.2 of a core: the measured processes are single-threaded (pyarrow's compression aside), so on this 2-core machine one
busy neighbour matters little, two do. With PostgreSQL the server's own work counts as "others".

Run from the repository root:

    .venv/bin/python bench/export.py                        # 200000 pairs, SQLite: ~1 minute (prepare ~25 s once)
    .venv/bin/python bench/export.py --pairs 1000000        # the issue's 1,000,000 pairs: ~3 min (prepare ~2 min once)
    .venv/bin/python bench/export.py --pairs 100000 --profile   # and cProfile's top functions of each export
    .venv/bin/python bench/export.py --pairs 20000 --database-url postgres://postgres@127.0.0.1:5432/postgres

With a PostgreSQL URL the database in the URL is only used to connect: the benchmark creates its own database
``bench_export_<pid>`` (failing if it exists), prepares it (no cache), and drops it at the end. ``--keep`` keeps the
temporary directory (outputs, subprocess logs) and the PostgreSQL database. ``--no-cache`` prepares SQLite in the
temporary directory instead of var/bench/export/, where each pair count keeps its own file (~0.6 GB per million
pairs; delete the folder to free the space). ``--repeats N`` measures every step N times in alternating order and
reports the medians. This is a shared virtual machine whose
speed drifts: a pure-Python calibration is printed before and after the measurements. The last line printed is
``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from common import BenchError, children_cpu_seconds, cpu_calibration, machine_busy_seconds, postgres_create, postgres_drop

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
# bench/ holds generation.py and training.py, named like the apps: when this file runs as a script its folder comes
# first on sys.path and would shadow them in the Django sides. The repository root goes first instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(REPO))

PYTHON = sys.executable  # run this script with the project's virtualenv: the subprocesses use the same interpreter
SCRIPT = str(Path(__file__).resolve())
SLUG = "bench"
FORMATS = ("jsonl", "parquet")
CACHE_DIR = REPO / "var" / "bench" / "export"
DEFAULT_PAIRS = 200_000
CHUNK = 2000  # rows per fetch / Parquet batch, as annotation.exporting.CHUNK
K = 4
RANKINGS_PER_ITEM = 2
PAIRS_PER_RANKING = K * (K - 1) // 2
HELDOUT_EVERY = 20
LABELERS = 12
ITEMS_PER_CHUNK = 1000  # preparation: items inserted per transaction
BUSY_CORES = 0.2  # CPU used by other processes during a run, in cores, above which its figure is flagged

WROTE = re.compile(r"Wrote (?P<rows>\d+) rows to (?P<path>\S+) \(sha256 (?P<sha>[0-9a-f]{64})\); card: (?P<card>\S+)")

WORDS = (
    "the a model answer question explain write summarize list compare data user system function python code error "
    "request response example table number value because however therefore please briefly detail step first second "
    "finally reason history science recipe travel budget email letter review story poem policy contract climate "
    "energy market health sleep garden music movie book city river mountain ocean planet history language grammar "
    "translate into french spanish german café naïve résumé Zürich São Paulo 東京 données über straße — “quoted” "
    "with without between about around under over after before during while since until whether which what how why"
).split()


@dataclass(frozen=True)
class Measurement:
    name: str
    seconds: float  # the work alone, measured inside the process
    startup_seconds: float  # process launch to ready (interpreter, imports, django.setup or the connection)
    peak_rss_mb: float  # VmHWM at exit
    startup_rss_mb: float  # VmHWM when ready
    other_cores: float  # CPU other processes used meanwhile, in cores (2.0 = both cores of this machine)
    stdout: str
    result: dict


# --- synthetic data (used by the prepare side) ---------------------------------------------------------------------


def text(rng: random.Random, min_chars: int, max_chars: int) -> str:
    """Sentences of random words, between min_chars and about max_chars characters."""
    target = rng.randint(min_chars, max_chars)
    sentences, length = [], 0
    while length < target:
        sentence = " ".join(rng.choices(WORDS, k=rng.randint(6, 16))).capitalize() + rng.choice(".?!.")
        sentences.append(sentence)
        length += len(sentence) + 1
    return " ".join(sentences)


def prompt_messages(rng: random.Random, number: int) -> list[dict]:
    if rng.random() < 0.7:
        return [{"role": "user", "content": f"{text(rng, 80, 400)} (prompt {number})"}]
    return [
        {"role": "system", "content": text(rng, 60, 200)},
        {"role": "user", "content": text(rng, 60, 300)},
        {"role": "assistant", "content": text(rng, 100, 400)},
        {"role": "user", "content": f"{text(rng, 40, 200)} (prompt {number})"},
    ]


def plan(pairs: int) -> tuple[int, int]:
    """(rankings, items) for exactly ``pairs`` pairs: 6 per ranking (the last may have fewer), 2 rankings per item."""
    rankings = -(-pairs // PAIRS_PER_RANKING)
    return rankings, -(-rankings // RANKINGS_PER_ITEM)


def side_prepare(args: argparse.Namespace) -> None:
    """Insert the project, prompts, candidates, items, rankings and pairs; print the counts as JSON."""
    from itertools import combinations

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from annotation.importing import content_hash
    from annotation.models import PreferencePair, Project, Prompt, Ranking, RankingItem
    from generation.models import Candidate, ModelVersion

    rng = random.Random(args.seed)
    total_rankings, total_items = plan(args.pairs)
    User = get_user_model()
    labelers = User.objects.bulk_create(
        [User(username=f"bench-labeler-{n:02d}", password="!") for n in range(LABELERS)]  # "!": unusable password
    )
    if labelers[0].pk is None:
        labelers = list(User.objects.filter(username__startswith="bench-labeler-").order_by("username"))
    project = Project.objects.create(
        name="Export bench", slug=args.slug, responses_per_item=K, rankings_per_item=RANKINGS_PER_ITEM,
        guidelines="Rank the responses from most to least helpful and harmless.",
    )
    versions = [
        ModelVersion.objects.create(name=f"bench-policy-{name}", base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
        for name in ("a", "b")
    ]
    Through = RankingItem.candidates.through
    counts = {"prompts": 0, "heldout_prompts": 0, "candidates": 0, "items": 0, "rankings": 0, "pairs": 0, "heldout_pairs": 0}
    ranking_number = 0
    for first in range(0, total_items, ITEMS_PER_CHUNK):
        numbers = range(first, min(first + ITEMS_PER_CHUNK, total_items))
        with transaction.atomic():
            prompts = []
            for number in numbers:
                messages = prompt_messages(rng, number)
                split = Prompt.Split.HELDOUT if number % HELDOUT_EVERY == HELDOUT_EVERY - 1 else Prompt.Split.TRAIN
                prompts.append(Prompt(project=project, messages=messages, source="bench", content_hash=content_hash(messages), split=split))
            Prompt.objects.bulk_create(prompts)
            candidates = []
            for prompt in prompts:
                for j in range(K):
                    response = f"{text(rng, 150, 700)} (response {j + 1})"
                    candidates.append(Candidate(
                        prompt=prompt, text=response, text_hash=content_hash(response), source=Candidate.Source.GENERATED,
                        model_version=versions[j % 2], num_tokens=len(response) // 4, finish_reason="stop",
                    ))
            Candidate.objects.bulk_create(candidates)
            items = []
            for number, prompt in zip(numbers, prompts, strict=True):
                rankings_count = min(RANKINGS_PER_ITEM, total_rankings - RANKINGS_PER_ITEM * number)
                items.append(RankingItem(project=project, prompt=prompt, rankings_count=rankings_count))
            RankingItem.objects.bulk_create(items)
            Through.objects.bulk_create([
                Through(rankingitem_id=item.pk, candidate_id=candidate.pk)
                for index, item in enumerate(items) for candidate in candidates[K * index:K * (index + 1)]
            ])
            rankings, orders = [], []
            for index, (number, item) in enumerate(zip(numbers, items, strict=True)):
                order = [candidate.pk for candidate in candidates[K * index:K * (index + 1)]]
                rng.shuffle(order)
                first_labeler = number % LABELERS
                second_labeler = (first_labeler + 1 + (number // LABELERS) % (LABELERS - 1)) % LABELERS
                for labeler_index in (first_labeler, second_labeler)[:item.rankings_count]:
                    rankings.append(Ranking(
                        item=item, labeler=labelers[labeler_index], tiers=[[pk] for pk in order],
                        time_spent_ms=rng.randint(5_000, 120_000),
                    ))
                    orders.append((order, item.prompt))
                    order = list(order)
                    if rng.random() < 0.6:  # the second labeler disagrees on two neighbours
                        swap = rng.randrange(K - 1)
                        order[swap], order[swap + 1] = order[swap + 1], order[swap]
            Ranking.objects.bulk_create(rankings)
            pairs = []
            for ranking, (order, prompt) in zip(rankings, orders, strict=True):
                left = min(PAIRS_PER_RANKING, args.pairs - PAIRS_PER_RANKING * ranking_number)
                ranking_number += 1
                for better, worse in list(combinations(range(K), 2))[:left]:
                    pairs.append(PreferencePair(
                        project=project, prompt=prompt, chosen_id=order[better], rejected_id=order[worse],
                        source=PreferencePair.Source.HUMAN, margin=float(worse - better), chosen_rank=better + 1,
                        rejected_rank=worse + 1, k=K, ranking=ranking, labeler_id=ranking.labeler_id,
                    ))
                    counts["heldout_pairs"] += prompt.split == Prompt.Split.HELDOUT
            PreferencePair.objects.bulk_create(pairs, batch_size=5000)
        counts["prompts"] += len(prompts)
        counts["heldout_prompts"] += sum(prompt.split == Prompt.Split.HELDOUT for prompt in prompts)
        counts["candidates"] += len(candidates)
        counts["items"] += len(items)
        counts["rankings"] += len(rankings)
        counts["pairs"] += len(pairs)
        print(f"{counts['pairs']} pairs inserted", file=sys.stderr, flush=True)
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":  # one self-contained file, safe to move and cache
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cursor.execute("PRAGMA journal_mode=DELETE")
        elif connection.vendor == "postgresql":
            cursor.execute("ANALYZE")  # what autovacuum would soon do after a bulk load
    connection.close()
    print(json.dumps(counts))


# --- measured sides ------------------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _report(args: argparse.Namespace, started: float, ready: float, ready_rss_kb: int, done: float, **result) -> None:
    with open(args.usage, "w") as out:
        json.dump({
            "seconds": done - ready, "ready_seconds": ready - started, "ready_wall": time.time() - (time.perf_counter() - ready),
            "peak_rss_kb": _status_kb("VmHWM"), "ready_rss_kb": ready_rss_kb, **result,
        }, out)


def side_export(args: argparse.Namespace) -> None:
    """The real path: export_preferences through call_command, after django.setup() (not timed)."""
    started = time.perf_counter()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    ready, ready_rss_kb = time.perf_counter(), _status_kb("VmHWM")
    if args.profile_out:
        import cProfile

        profiler = cProfile.Profile()
        profiler.runcall(call_command, "export_preferences", args.slug, "--format", args.format, "--out", args.out)
        done = time.perf_counter()
        profiler.dump_stats(args.profile_out)
    else:
        call_command("export_preferences", args.slug, "--format", args.format, "--out", args.out)
        done = time.perf_counter()
    _report(args, started, ready, ready_rss_kb, done)


BASELINE_SQL = """
SELECT pp.id, pr.slug, pp.prompt_id, p.messages, p.split, pp.chosen_id, c1.text, m1.name, pp.rejected_id, c2.text,
       m2.name, pp.margin, pp.chosen_rank, pp.rejected_rank, pp.k, pp.labeler_id, pp.ranking_id, pp.source, pp.created_at
FROM annotation_preferencepair pp
JOIN annotation_project pr ON pr.id = pp.project_id
JOIN annotation_prompt p ON p.id = pp.prompt_id
JOIN generation_candidate c1 ON c1.id = pp.chosen_id
LEFT JOIN generation_modelversion m1 ON m1.id = c1.model_version_id
JOIN generation_candidate c2 ON c2.id = pp.rejected_id
LEFT JOIN generation_modelversion m2 ON m2.id = c2.model_version_id
WHERE pr.slug = {placeholder}
ORDER BY pp.id
"""


def _baseline_rows(cursor):
    while True:
        rows = cursor.fetchmany(CHUNK)
        if not rows:
            return
        yield from rows


def _baseline_dict(values) -> dict:
    (pk, slug, prompt_id, messages, split, chosen_id, chosen, chosen_model, rejected_id, rejected, rejected_model,
     margin, chosen_rank, rejected_rank, k, labeler_id, ranking_id, source, created_at) = values
    return {
        "prompt": json.loads(messages) if isinstance(messages, str) else messages,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "margin": margin, "pair_id": pk, "project": slug, "prompt_id": prompt_id, "chosen_id": chosen_id,
        "rejected_id": rejected_id, "chosen_rank": chosen_rank, "rejected_rank": rejected_rank, "k": k,
        "labeler": f"labeler-{labeler_id}", "ranking_id": ranking_id, "agreement": None, "chosen_model": chosen_model,
        "rejected_model": rejected_model, "source": source, "split": "test" if split == "heldout" else "train",
        "created_at": str(created_at),
    }


def side_baseline(args: argparse.Namespace) -> None:
    """The same rows without Django: a DB-API cursor, then nothing (select), json.dumps lines or pyarrow batches."""
    started = time.perf_counter()
    url = os.environ["DATABASE_URL"]
    if urlsplit(url).scheme == "sqlite":
        import sqlite3

        connection = sqlite3.connect(url[len("sqlite:///"):])
        cursor, placeholder = connection.cursor(), "?"
    else:
        import psycopg

        connection = psycopg.connect(url)
        cursor, placeholder = connection.cursor(name="bench_export", withhold=False), "%s"
        cursor.itersize = CHUNK
    ready, ready_rss_kb = time.perf_counter(), _status_kb("VmHWM")
    cursor.execute(BASELINE_SQL.format(placeholder=placeholder), (args.slug,))
    rows = 0
    if args.format == "select":
        for _ in _baseline_rows(cursor):
            rows += 1
    elif args.format == "jsonl":
        with open(args.out, "wb") as out:
            for values in _baseline_rows(cursor):
                out.write((json.dumps(_baseline_dict(values), ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n").encode())
                rows += 1
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        message = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
        schema = pa.schema([
            ("prompt", message), ("chosen", message), ("rejected", message), ("margin", pa.float64()),
            ("pair_id", pa.int64()), ("project", pa.string()), ("prompt_id", pa.int64()), ("chosen_id", pa.int64()),
            ("rejected_id", pa.int64()), ("chosen_rank", pa.int32()), ("rejected_rank", pa.int32()), ("k", pa.int32()),
            ("labeler", pa.string()), ("ranking_id", pa.int64()), ("agreement", pa.float64()),
            ("chosen_model", pa.string()), ("rejected_model", pa.string()), ("source", pa.string()),
            ("split", pa.string()), ("created_at", pa.string()),
        ])  # annotation.exporting.parquet_schema()
        with pq.ParquetWriter(args.out, schema, compression="zstd") as writer:
            batch = []
            for values in _baseline_rows(cursor):
                batch.append(_baseline_dict(values))
                if len(batch) == CHUNK:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    rows += len(batch)
                    batch = []
            if batch:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                rows += len(batch)
    cursor.close()
    connection.close()
    _report(args, started, ready, ready_rss_kb, time.perf_counter(), rows=rows)


# --- subprocesses --------------------------------------------------------------------------------------------------


def run_side(name: str, side_args: list[str], env: dict[str, str], logs: Path) -> Measurement:
    """Run this file with ``side_args`` in a fresh process; return what it measured of itself."""
    stdout_path, stderr_path, usage_path = (logs / f"{name}.{kind}" for kind in ("stdout", "stderr", "usage"))
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        busy, ours, wall = machine_busy_seconds(), children_cpu_seconds(), time.perf_counter()
        launched = time.time()
        process = subprocess.run([PYTHON, SCRIPT, *side_args, "--usage", str(usage_path)], cwd=REPO, env=env, stdout=stdout, stderr=stderr)
        busy, ours = machine_busy_seconds() - busy, children_cpu_seconds() - ours
        other_cores = max(0.0, busy - ours) / (time.perf_counter() - wall)
    out, err = stdout_path.read_text(errors="replace"), stderr_path.read_text(errors="replace")
    if process.returncode != 0:
        tail = "\n".join(err.strip().splitlines()[-15:])
        raise BenchError(f"{name} failed (exit status {process.returncode}): {' '.join(side_args)}\n{tail}")
    usage = json.loads(usage_path.read_text())
    return Measurement(
        name=name, seconds=usage["seconds"], startup_seconds=usage["ready_wall"] - launched,
        peak_rss_mb=usage["peak_rss_kb"] / 1024, startup_rss_mb=usage["ready_rss_kb"] / 1024, other_cores=other_cores,
        stdout=out, result=usage,
    )


def run_plain(name: str, argv: list[str], env: dict[str, str], logs: Path) -> tuple[str, float]:
    """Run a helper (migrate, prepare); return its stdout and wall seconds."""
    stdout_path, stderr_path = logs / f"{name}.stdout", logs / f"{name}.stderr"
    started = time.perf_counter()
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        process = subprocess.run(argv, cwd=REPO, env=env, stdout=stdout, stderr=stderr)
    if process.returncode != 0:
        tail = "\n".join(stderr_path.read_text(errors="replace").strip().splitlines()[-15:])
        raise BenchError(f"{name} failed (exit status {process.returncode})\n{tail}")
    return stdout_path.read_text(errors="replace"), time.perf_counter() - started


def prepare(pairs: int, seed: int, env: dict[str, str], logs: Path) -> tuple[dict, float]:
    """Migrate and fill the database of ``env``; return the counts and the seconds it took."""
    _, migrate_seconds = run_plain("migrate", [PYTHON, "manage.py", "migrate", "--noinput", "--no-color"], env, logs)
    out, fill_seconds = run_plain(
        "prepare", [PYTHON, SCRIPT, "--side", "prepare", "--pairs", str(pairs), "--seed", str(seed)], env, logs
    )
    counts = json.loads(out.strip().splitlines()[-1])
    if counts["pairs"] != pairs:
        raise BenchError(f"prepare: inserted {counts['pairs']} pairs, expected {pairs}")
    return counts, migrate_seconds + fill_seconds


def cache_key(seed: int) -> str:
    """Changes with the migrations, the preparation code and its data: a stale cache is never reused."""
    digest = hashlib.sha256()
    for source in (side_prepare, text, prompt_messages, plan):
        digest.update(inspect.getsource(source).encode())
    digest.update(repr((WORDS, K, RANKINGS_PER_ITEM, HELDOUT_EVERY, LABELERS, ITEMS_PER_CHUNK, seed)).encode())
    for migration in sorted(REPO.glob("*/migrations/0*.py")):
        digest.update(migration.name.encode() + migration.read_bytes())
    return digest.hexdigest()[:12]


def cached_sqlite(pairs: int, seed: int, fresh: bool, env: dict[str, str], logs: Path) -> tuple[Path, dict, float | None]:
    """The cached SQLite database for ``pairs`` (built now if missing or ``fresh``): (path, counts, seconds to build
    or None when reused). Built under a temporary name and renamed once complete; older caches of the same size go."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    stem = f"export-{pairs}-s{seed}"
    path, counts_path = CACHE_DIR / f"{stem}-{cache_key(seed)}.sqlite3", CACHE_DIR / f"{stem}-{cache_key(seed)}.json"
    if path.exists() and counts_path.exists() and not fresh:
        return path, json.loads(counts_path.read_text()), None
    for old in CACHE_DIR.glob(f"{stem}-*"):
        old.unlink()
    building = CACHE_DIR / f"{stem}.building-{os.getpid()}.sqlite3"
    try:
        counts, seconds = prepare(pairs, seed, {**env, "DATABASE_URL": f"sqlite:///{building}"}, logs)
        building.rename(path)
        counts_path.write_text(json.dumps(counts))
    finally:
        for leftover in CACHE_DIR.glob(f"{building.name}*"):
            leftover.unlink()
    return path, counts, seconds


def warm(path: Path) -> None:
    """Read the SQLite file once so every measured run finds it in the page cache (the first would not)."""
    with open(path, "rb") as data:
        while data.read(1 << 24):
            pass


# --- checks --------------------------------------------------------------------------------------------------------


def check_jsonl(name: str, path: Path, pairs: int, heldout_pairs: int) -> None:
    lines = tests = 0
    with open(path, "rb") as data:
        for line in data:
            lines += 1
            tests += line.endswith(b'"split":"test"}\n')  # sort_keys: split is the last key
    if lines != pairs or tests != heldout_pairs:
        raise BenchError(f"{name}: {lines} lines ({tests} in the test split), expected {pairs} ({heldout_pairs})")
    with open(path, "rb") as data:
        first = json.loads(data.readline())
    if not (first["prompt"] and first["chosen"][0]["role"] == "assistant" and first["rejected"][0]["content"]):
        raise BenchError(f"{name}: the first row is not a conversational preference pair: {first}")


def check_parquet(name: str, path: Path, pairs: int, heldout_pairs: int) -> None:
    import pyarrow.parquet as pq

    split = pq.read_table(path, columns=["split"]).column("split").to_pylist()
    tests = split.count("test")
    if len(split) != pairs or tests != heldout_pairs:
        raise BenchError(f"{name}: {len(split)} rows ({tests} in the test split), expected {pairs} ({heldout_pairs})")


def check_export(measurement: Measurement, export_format: str, path: Path, counts: dict) -> None:
    match = WROTE.search(measurement.stdout)
    if not match or int(match["rows"]) != counts["pairs"]:
        raise BenchError(f"{measurement.name}: expected 'Wrote {counts['pairs']} rows ...', got:\n{measurement.stdout.strip()}")
    if not Path(match["card"]).is_file():
        raise BenchError(f"{measurement.name}: no card at {match['card']}")
    checker = check_jsonl if export_format == "jsonl" else check_parquet
    checker(measurement.name, path, counts["pairs"], counts["heldout_pairs"])


# --- report --------------------------------------------------------------------------------------------------------


def database_kind(url: str) -> str:
    scheme = urlsplit(url).scheme
    return "postgresql" if scheme in {"postgres", "postgresql"} else scheme


def print_table(counts: dict, runs: list[Measurement], setup: str, database: str, sizes: dict[str, int], repeats: int) -> None:
    print(
        f"\nData: {counts['pairs']} pairs from {counts['rankings']} rankings of {counts['items']} items "
        f"({counts['prompts']} prompts, {counts['heldout_prompts']} held out: {counts['heldout_pairs']} pairs), "
        f"{counts['candidates']} candidates; database: {database}; {setup}"
    )
    baselines = {m.name.removeprefix("baseline-"): m for m in runs if m.name.startswith("baseline-")}
    print(f"\n{'step':<17} {'seconds':>8} {'pairs/s':>9} {'x baseline':>10} {'peak RSS MB':>11} {'start RSS MB':>12} "
          f"{'start-up s':>10} {'output MB':>9} {'others':>6}")
    for m in runs:
        base = baselines.get(m.name.split("-", 1)[1])
        ratio = f"{m.seconds / base.seconds:.2f}" if base and base is not m else ""
        size = f"{sizes[m.name] / 1e6:.0f}" if m.name in sizes else ""
        print(f"{m.name:<17} {m.seconds:>8.2f} {counts['pairs'] / m.seconds:>9.0f} {ratio:>10} {m.peak_rss_mb:>11.1f} "
              f"{m.startup_rss_mb:>12.1f} {m.startup_seconds:>10.2f} {size:>9} {m.other_cores:>6.2f}")
    print(f"(seconds: the work alone, measured in the process, start-up excluded{'; median of ' + str(repeats) if repeats > 1 else ''}; "
          "x baseline: seconds / the bare script's seconds for the same format; peak RSS: VmHWM of that process alone; "
          "start RSS: after start-up; others: cores other processes used meanwhile)\n")
    busy = [f"{m.name} ({m.other_cores:.2f})" for m in runs if m.other_cores > BUSY_CORES]
    if busy:
        print(f"NOTE: other processes used more than {BUSY_CORES} of a core during {', '.join(busy)}: those figures may "
              "be low (rerun, or use --repeats for medians).\n")


def result_line(counts: dict, runs: dict[str, Measurement], database: str, prepare_seconds: float | None) -> str:
    pairs = counts["pairs"]
    fields = {"pairs": pairs}
    for export_format in FORMATS:
        m = runs[f"export-{export_format}"]
        fields[f"{export_format}_pairs_per_s"] = f"{pairs / m.seconds:.0f}"
        fields[f"{export_format}_seconds"] = f"{m.seconds:.2f}"
        fields[f"{export_format}_peak_rss_mb"] = f"{m.peak_rss_mb:.1f}"
    for kind in ("select", *FORMATS):
        fields[f"baseline_{kind}_pairs_per_s"] = f"{pairs / runs[f'baseline-{kind}'].seconds:.0f}"
    for export_format in FORMATS:
        fields[f"{export_format}_x_baseline"] = f"{runs[f'export-{export_format}'].seconds / runs[f'baseline-{export_format}'].seconds:.2f}"
    fields["django_startup_s"] = f"{runs['export-jsonl'].startup_seconds:.2f}"
    fields["prepare_s"] = f"{prepare_seconds:.1f}" if prepare_seconds is not None else "cached"
    fields["database"] = database
    return "RESULT " + " ".join(f"{key}={value}" for key, value in fields.items())


def print_profile(path: Path, export_format: str, top: int) -> None:
    import io
    import pstats

    for order in ("tottime", "cumulative"):
        stream = io.StringIO()
        pstats.Stats(str(path), stream=stream).strip_dirs().sort_stats(order).print_stats(top)
        body = stream.getvalue()
        start = body.find("   ncalls")
        print(f"\ncProfile of export-{export_format}, top {top} by {order}:\n{body[start:].rstrip()}")


# --- main ----------------------------------------------------------------------------------------------------------


def benchmark(args: argparse.Namespace, workdir: Path, database_url: str | None) -> str:
    logs = workdir / "logs"
    logs.mkdir()
    env = {
        **os.environ,
        "PREFLOOP_DATA_DIR": str(workdir / "data"),
        "CELERY_BROKER_URL": "filesystem://",  # nothing here should reach the network
        "PYTHONUNBUFFERED": "1",
    }
    if database_url is None:  # SQLite
        if args.no_cache:
            path = workdir / "bench.sqlite3"
            print(f"Preparing {args.pairs} pairs in {path} ...", flush=True)
            counts, prepare_seconds = prepare(args.pairs, args.seed, {**env, "DATABASE_URL": f"sqlite:///{path}"}, logs)
        else:
            print(f"Preparing {args.pairs} pairs (or reusing the cache in {CACHE_DIR}) ...", flush=True)
            path, counts, prepare_seconds = cached_sqlite(args.pairs, args.seed, args.fresh, env, logs)
        database_url = f"sqlite:///{path}"
        warm(path)
        setup = f"prepared in {prepare_seconds:.1f} s" if prepare_seconds is not None else f"reused {path.relative_to(REPO)}"
    else:
        print(f"Preparing {args.pairs} pairs in PostgreSQL ...", flush=True)
        counts, prepare_seconds = prepare(args.pairs, args.seed, {**env, "DATABASE_URL": database_url}, logs)
        setup = f"prepared in {prepare_seconds:.1f} s"
    env["DATABASE_URL"] = database_url
    database = database_kind(database_url)

    calibration_before = cpu_calibration()
    print(f"Measuring (CPU calibration {calibration_before:.1f} ms) ...", flush=True)
    repeats: dict[str, list[Measurement]] = {}
    sizes: dict[str, int] = {}
    steps = [("baseline", "select"), *[(side, fmt) for fmt in FORMATS for side in ("baseline", "export")]]
    for repeat in range(args.repeats):
        for side, kind in steps if repeat % 2 == 0 else steps[::-1]:  # alternate the order between repetitions
            name = f"{side}-{kind}"
            out = workdir / f"{name}.{kind}"
            print(f"  {name}{f' ({repeat + 1}/{args.repeats})' if args.repeats > 1 else ''} ...", flush=True)
            m = run_side(name, ["--side", side, "--format", kind, "--out", str(out)], env, logs)
            repeats.setdefault(name, []).append(m)
            if side == "export":
                check_export(m, kind, out, counts)
            elif m.result["rows"] != counts["pairs"]:
                raise BenchError(f"{name}: {m.result['rows']} rows, expected {counts['pairs']}")
            elif kind != "select":
                (check_jsonl if kind == "jsonl" else check_parquet)(name, out, counts["pairs"], counts["heldout_pairs"])
            if kind != "select":
                sizes[name] = out.stat().st_size
                out.unlink()
            print(f"    {m.seconds:.2f} s, {counts['pairs'] / m.seconds:.0f} pairs/s, peak RSS {m.peak_rss_mb:.1f} MB"
                  f"{f', other processes {m.other_cores:.2f} cores' if m.other_cores > BUSY_CORES else ''}", flush=True)
    calibration_after = cpu_calibration()
    # The median repetition of each step (the lower middle one for an even count); its own peak RSS goes with it.
    runs = {name: sorted(ms, key=lambda m: m.seconds)[(len(ms) - 1) // 2] for name, ms in repeats.items()}

    print_table(counts, list(runs.values()), setup, database, sizes, args.repeats)
    print(f"CPU calibration: {calibration_before:.1f} ms before, {calibration_after:.1f} ms after (lower is faster)")

    if args.profile:
        for export_format in FORMATS:
            out, stats = workdir / f"profile.{export_format}", workdir / f"profile-{export_format}.prof"
            print(f"\nProfiling export-{export_format} (cProfile; not part of the figures above) ...", flush=True)
            run_side(f"profile-{export_format}", ["--side", "export", "--format", export_format, "--out", str(out),
                                                  "--profile-out", str(stats)], env, logs)
            out.unlink()
            print_profile(stats, export_format, args.profile_top)
    return result_line(counts, runs, database, prepare_seconds)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=DEFAULT_PAIRS,
                        help=f"Preference pairs to export (default {DEFAULT_PAIRS}; the issue's figure is 1000000).")
    parser.add_argument("--seed", type=int, default=1234, help="Seed of the synthetic data (default 1234).")
    parser.add_argument(
        "--database-url",
        help="Default: SQLite, cached in var/bench/export/. A PostgreSQL URL is only used to connect: a dedicated "
        "database bench_export_<pid> is created, prepared and dropped.",
    )
    parser.add_argument("--repeats", type=int, default=1, help="Measure each step this many times; report medians (default 1).")
    parser.add_argument("--fresh", action="store_true", help="Rebuild the cached SQLite database.")
    parser.add_argument("--no-cache", action="store_true", help="Prepare SQLite in the temporary directory, no cache.")
    parser.add_argument("--profile", action="store_true",
                        help="After the measurements, profile each export with cProfile and print its top functions.")
    parser.add_argument("--profile-top", type=int, default=25, help="Functions listed by --profile (default 25).")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory (and PostgreSQL database).")
    # The subprocess sides (this file run again by the benchmark):
    parser.add_argument("--side", choices=["prepare", "export", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--format", choices=["select", *FORMATS], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--usage", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    parser.add_argument("--slug", default=SLUG, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.side:
        {"prepare": side_prepare, "export": side_export, "baseline": side_baseline}[args.side](args)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="bench_export_"))
    postgres_name = None  # set once the dedicated PostgreSQL database exists
    try:
        database_url = None
        if args.database_url:
            if database_kind(args.database_url) != "postgresql":
                raise BenchError("--database-url takes a PostgreSQL URL (SQLite is the default)")
            name = f"bench_export_{os.getpid()}"
            database_url, postgres_name = postgres_create(args.database_url, name), name
        started = time.perf_counter()
        result = benchmark(args, workdir, database_url)
        print(f"Whole run: {time.perf_counter() - started:.0f} s")
    except BenchError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"Kept {workdir}" + (f" and database {postgres_name}" if postgres_name else ""), flush=True)
        else:
            if postgres_name:
                postgres_drop(args.database_url, postgres_name)
            shutil.rmtree(workdir, ignore_errors=True)
    print(result)  # last, so the RESULT line ends the output
    return 0


if __name__ == "__main__":
    sys.exit(main())
