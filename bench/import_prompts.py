"""Benchmark of `python manage.py import_prompts` on a large synthetic JSONL file.

What it measures, each step a separate subprocess started exactly as a user would from the repository root:

1. baseline  - a plain ``for line in file: json.loads(line)`` loop over the file, in the same interpreter: the
               irreducible cost of reading and parsing the JSON, so the ratio shows what validation, hashing and
               database writes add;
2. import    - ``manage.py import_prompts bench <file>`` into a freshly migrated, empty project (every row new);
3. re-import - the same command on the same file again (every row a duplicate): the duplicate-detection speed;
4. formats   - the same rows as ``.jsonl.gz``, as one JSON array (``.json``) and as ``.csv``, each imported by the
               same command into a project of its own (every row new): time and peak memory per format, which must
               stay flat (a JSON array is parsed incrementally, a gzipped file decompressed as it is read).

Wall time is the whole subprocess (interpreter and Django start-up included, as a user experiences it); peak memory
is the maximum resident set size of that one subprocess (see ``MEASURE``). With PostgreSQL the server's own
memory is not included. The file mixes ~70% ``{"prompt": ...}`` rows, ~20% multi-turn ``{"messages": [...]}`` rows
and ~10% TRL preference rows ``{"prompt", "chosen", "rejected"}``, texts of a few hundred characters, all prompts
distinct, generated deterministically from ``--seed``. The counts printed by the command are checked against the
file, and the database rows are counted through ``manage.py shell -c``; any mismatch or failure exits non-zero.

Run from the repository root:

    .venv/bin/python bench/import_prompts.py                      # 100000 rows, SQLite in a temporary directory
    .venv/bin/python bench/import_prompts.py --rows 20000 --database-url postgres://postgres@127.0.0.1:5432/test

With a PostgreSQL URL the database in the URL is only used to connect: the benchmark creates its own database
``bench_import_<pid>`` (failing if it exists) and drops it at the end. ``--keep`` keeps the temporary directory (the
JSONL file, the SQLite database, the subprocess logs) and the PostgreSQL database. The last line printed is
``RESULT key=value ...`` for scripts.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from common import BenchError, postgres_create, postgres_drop

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable  # run this script with the project's virtualenv: the subprocesses use the same interpreter
SLUG = "bench"

SUMMARY = re.compile(
    r"Imported into (?P<slug>\S+): (?P<rows>\d+) rows, (?P<prompts>\d+) new prompts, "
    r"(?P<pairs>\d+) new preference pairs, (?P<duplicates>\d+) duplicates skipped"
)

BASELINE_CODE = """\
import json, sys
count = 0
with open(sys.argv[1], encoding="utf-8") as lines:
    for line in lines:
        json.loads(line)
        count += 1
print(count)
"""

# Runs ``argv`` and writes "<peak RSS in kB> <wall seconds>" of that one process to ``usage_file``.
#
# Peak RSS is ``ru_maxrss`` from ``os.wait4``, which reaps exactly this child and returns its rusage: the kernel's
# high-water mark of the process's resident memory over its whole life (kB on Linux), so nothing is missed as it
# would be by polling /proc/<pid>/status VmHWM. manage.py starts no processes of its own, so that is the whole
# import. Why a tiny launcher process instead of calling ``os.wait4`` here: on exec, Linux carries the high-water
# mark of the address space the child was forked (vforked) from into its ru_maxrss, so a child of this benchmark
# would report at least this script's own peak (the generator, psycopg, ...). The launcher is a bare interpreter
# that imports nothing beyond os, sys and time, and every measured child is a Python interpreter doing more than
# that, so the inherited floor never shows. (``getrusage(RUSAGE_CHILDREN)`` before and after would also be wrong:
# it is the maximum over all children reaped so far, so an import smaller than the earlier migrate would report the
# migrate's peak.) The wall time is taken around the child alone, so the launcher's start-up is not counted.
MEASURE = """\
import os, sys, time
usage_file, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.posix_spawn(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(usage_file, "w") as out:
    out.write(f"{usage.ru_maxrss} {seconds}")
sys.exit(os.waitstatus_to_exitcode(status))
"""

COUNT_CODE = (
    "from annotation.models import PreferencePair, Prompt; from generation.models import Candidate; "
    f"print(Prompt.objects.filter(project__slug={SLUG!r}).count(), "
    f"PreferencePair.objects.filter(project__slug={SLUG!r}).count(), "
    f"Candidate.objects.filter(prompt__project__slug={SLUG!r}).count())"
)

WORDS = (
    "the a model answer question explain write summarize list compare data user system function python code error "
    "request response example table number value because however therefore please briefly detail step first second "
    "finally reason history science recipe travel budget email letter review story poem policy contract climate "
    "energy market health sleep garden music movie book city river mountain ocean planet history language grammar "
    "translate into french spanish german café naïve résumé Zürich São Paulo 東京 données über straße — “quoted” "
    "with without between about around under over after before during while since until whether which what how why"
).split()


@dataclass(frozen=True)
class FileStats:
    rows: int
    prompt_rows: int
    messages_rows: int
    preference_rows: int
    size_bytes: int


@dataclass(frozen=True)
class Measurement:
    name: str
    seconds: float
    peak_rss_mb: float
    stdout: str


# --- synthetic data ----------------------------------------------------------------------------------------------


def text(rng: random.Random, min_chars: int, max_chars: int) -> str:
    """Sentences of random words, between min_chars and about max_chars characters."""
    target = rng.randint(min_chars, max_chars)
    sentences, length = [], 0
    while length < target:
        words = rng.choices(WORDS, k=rng.randint(6, 16))
        sentence = " ".join(words).capitalize() + rng.choice((".", ".", ".", "?", "!"))
        sentences.append(sentence)
        length += len(sentence) + 1
    return " ".join(sentences)


def prompt_row(rng: random.Random, number: int) -> dict:
    # The row number makes every prompt distinct, so the expected counts are exact.
    return {"prompt": f"{text(rng, 150, 500)} (case {number})"}


def messages_row(rng: random.Random, number: int) -> dict:
    messages = [{"role": "system", "content": text(rng, 80, 250)}] if rng.random() < 0.3 else []
    for _ in range(rng.randint(1, 3)):
        messages.append({"role": "user", "content": text(rng, 100, 400)})
        messages.append({"role": "assistant", "content": text(rng, 150, 500)})
    messages.append({"role": "user", "content": f"{text(rng, 50, 300)} (case {number})"})
    return {"messages": messages}


def preference_row(rng: random.Random, number: int) -> dict:
    chosen = text(rng, 200, 600)
    rejected = text(rng, 100, 500)
    if rejected == chosen:
        rejected += " (worse)"
    return {"prompt": f"{text(rng, 100, 400)} (case {number})", "chosen": chosen, "rejected": rejected}


def write_jsonl(path: Path, rows: int, seed: int) -> FileStats:
    rng = random.Random(seed)
    counts = {"prompt": 0, "messages": 0, "preference": 0}
    with open(path, "w", encoding="utf-8") as out:
        for number in range(1, rows + 1):
            draw = rng.random()
            kind = "prompt" if draw < 0.7 else "messages" if draw < 0.9 else "preference"
            row = {"prompt": prompt_row, "messages": messages_row, "preference": preference_row}[kind](rng, number)
            if rng.random() < 0.5:
                row["id"] = f"ex-{number}"
            if rng.random() < 0.2:
                row["category"] = rng.choice(("coding", "writing", "qa", "chat"))  # an unknown key goes to metadata
            counts[kind] += 1
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return FileStats(rows, counts["prompt"], counts["messages"], counts["preference"], path.stat().st_size)


FORMATS = ("jsonl.gz", "json", "csv")
CSV_COLUMNS = ("prompt", "messages", "chosen", "rejected", "id", "category")


def write_formats(jsonl: Path, formats: list[str]) -> dict[str, Path]:
    """The JSONL file's rows in the other formats, written a row at a time."""
    paths = {name: jsonl.with_name(f"prompts.{name}") for name in formats}
    with open(jsonl, encoding="utf-8") as lines:
        outputs = {name: _open_format(name, path) for name, path in paths.items()}
        try:
            for number, line in enumerate(lines):
                for name, (out, write) in outputs.items():
                    write(number, line)
        finally:
            for name, (out, _) in outputs.items():
                if name == "json":
                    out.write("\n]\n")
                out.close()
    return paths


def _open_format(name: str, path: Path):
    if name == "jsonl.gz":
        out = gzip.open(path, "wt", encoding="utf-8", compresslevel=6)
        return out, lambda number, line: out.write(line)
    if name == "json":
        out = open(path, "w", encoding="utf-8")
        out.write("[\n")
        return out, lambda number, line: out.write(("" if number == 0 else ",\n") + line.rstrip("\n"))
    if name == "csv":
        out = open(path, "w", encoding="utf-8", newline="")
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
        writer.writeheader()

        def write(number, line):
            row = json.loads(line)
            if "messages" in row:
                row["messages"] = json.dumps(row["messages"], ensure_ascii=False)
            writer.writerow(row)

        return out, write
    raise ValueError(name)


# --- subprocesses --------------------------------------------------------------------------------------------------


def run_measured(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Measurement:
    """Run one subprocess through MEASURE; return its wall time and its own peak RSS. Output goes to log files."""
    stdout_path, stderr_path, usage_path = (logs / f"{name}.{kind}" for kind in ("stdout", "stderr", "usage"))
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        launcher = [PYTHON, "-c", MEASURE, str(usage_path)]
        process = subprocess.run([*launcher, *argv], cwd=REPO, env=env, stdout=stdout, stderr=stderr)
    out, err = stdout_path.read_text(errors="replace"), stderr_path.read_text(errors="replace")
    if process.returncode != 0:
        tail = "\n".join(err.strip().splitlines()[-15:])
        raise BenchError(f"{name} failed (exit status {process.returncode}): {' '.join(argv)}\n{tail}")
    max_rss_kb, seconds = usage_path.read_text().split()
    return Measurement(name, float(seconds), int(max_rss_kb) / 1024, out)


def manage(name: str, args: list[str], env: dict[str, str], logs: Path) -> Measurement:
    return run_measured(name, [PYTHON, "manage.py", *args, "--no-color"], env, logs)


def parse_summary(measurement: Measurement, slug: str = SLUG) -> dict[str, int]:
    match = SUMMARY.search(measurement.stdout)
    if not match or match["slug"] != slug:
        raise BenchError(f"{measurement.name}: no summary line in the output:\n{measurement.stdout.strip()}")
    return {key: int(value) for key, value in match.groupdict().items() if key != "slug"}


def check(name: str, actual: dict[str, int], expected: dict[str, int]) -> None:
    wrong = {key: (actual.get(key), value) for key, value in expected.items() if actual.get(key) != value}
    if wrong:
        details = ", ".join(f"{key}: got {got}, expected {want}" for key, (got, want) in wrong.items())
        raise BenchError(f"{name}: counts do not match ({details})")


def database_counts(env: dict[str, str], logs: Path) -> dict[str, int]:
    output = manage("count", ["shell", "-c", COUNT_CODE], env, logs).stdout.strip().splitlines()
    prompts, pairs, candidates = (int(value) for value in output[-1].split())
    return {"prompts": prompts, "pairs": pairs, "candidates": candidates}


# --- databases -----------------------------------------------------------------------------------------------------


def database_kind(url: str) -> str:
    scheme = urlsplit(url).scheme
    return "postgresql" if scheme in {"postgres", "postgresql"} else scheme


# --- report --------------------------------------------------------------------------------------------------------


def print_table(
    stats: FileStats, setup: list[Measurement], runs: list[Measurement], database: str, sizes: dict[str, int]
) -> None:
    print(
        f"\nFile: {stats.rows} rows ({stats.prompt_rows} prompt, {stats.messages_rows} messages, "
        f"{stats.preference_rows} preference), {stats.size_bytes / 1e6:.1f} MB; database: {database}"
    )
    print("Setup: " + ", ".join(f"{m.name} {m.seconds:.1f} s" for m in setup))
    baseline = runs[0].seconds
    print(f"\n{'step':<10} {'seconds':>9} {'rows/s':>10} {'peak RSS MB':>12} {'x baseline':>11}")
    for m in runs:
        rate, ratio = stats.rows / m.seconds, m.seconds / baseline
        print(f"{m.name:<10} {m.seconds:>9.2f} {rate:>10.0f} {m.peak_rss_mb:>12.1f} {ratio:>11.1f}")
    print("(seconds: whole subprocess, Python and Django start-up included; peak RSS: that subprocess alone)")
    print("(jsonl.gz, json, csv: the same rows in that format, imported into a project of their own)")
    print("File sizes: " + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in sizes.items()) + "\n")


def result_line(
    stats: FileStats, baseline: Measurement, first: Measurement, again: Measurement, database: str,
    formats: list[Measurement],
) -> str:
    fields = {
        "rows": stats.rows,
        "seconds": f"{first.seconds:.2f}",
        "rows_per_second": f"{stats.rows / first.seconds:.0f}",
        "peak_rss_mb": f"{first.peak_rss_mb:.1f}",
        "baseline_parse_rows_per_second": f"{stats.rows / baseline.seconds:.0f}",
        "reimport_rows_per_second": f"{stats.rows / again.seconds:.0f}",
    }
    for m in formats:
        key = m.name.replace(".", "_")
        fields[f"seconds_{key}"] = f"{m.seconds:.2f}"
        fields[f"peak_rss_mb_{key}"] = f"{m.peak_rss_mb:.1f}"
    fields["database"] = database
    return "RESULT " + " ".join(f"{key}={value}" for key, value in fields.items())


# --- main ----------------------------------------------------------------------------------------------------------


def benchmark(rows: int, seed: int, database_url: str, workdir: Path, formats: list[str]) -> str:
    path = workdir / "prompts.jsonl"
    print(f"Writing {rows} rows to {path} ...", flush=True)
    stats = write_jsonl(path, rows, seed)
    if formats:
        print(f"Writing the same rows as {', '.join(formats)} ...", flush=True)
    format_paths = write_formats(path, formats)
    database = database_kind(database_url)
    env = {
        **os.environ,
        "PREFLOOP_DATA_DIR": str(workdir / "data"),
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": "filesystem://",  # nothing here should reach the network
        "PYTHONUNBUFFERED": "1",
    }
    logs = workdir / "logs"
    logs.mkdir()

    print("Migrating and creating the project ...", flush=True)
    setup = [
        manage("migrate", ["migrate", "--noinput"], env, logs),
        manage("create", ["create_project", SLUG, "--name", "bench", "--k", "4"], env, logs),
        *(
            manage(f"create-{name}", ["create_project", _slug(name), "--name", f"bench {name}", "--k", "4"], env, logs)
            for name in formats
        ),
    ]
    print("Running the baseline, the import and the re-import ...", flush=True)
    baseline = run_measured("baseline", [PYTHON, "-c", BASELINE_CODE, str(path)], env, logs)
    if int(baseline.stdout.strip() or -1) != rows:
        raise BenchError(f"baseline: parsed {baseline.stdout.strip()} rows, expected {rows}")
    pairs = stats.preference_rows
    first = manage("import", ["import_prompts", SLUG, str(path)], env, logs)
    check("import", parse_summary(first), {"rows": rows, "prompts": rows, "pairs": pairs, "duplicates": 0})
    again = manage("re-import", ["import_prompts", SLUG, str(path)], env, logs)
    check("re-import", parse_summary(again), {"rows": rows, "prompts": 0, "pairs": 0, "duplicates": rows})
    check("database", database_counts(env, logs), {"prompts": rows, "pairs": pairs, "candidates": 2 * pairs})
    by_format = []
    for name, format_path in format_paths.items():
        print(f"Importing the {name} file ...", flush=True)
        run = manage(name, ["import_prompts", _slug(name), str(format_path)], env, logs)
        check(name, parse_summary(run, _slug(name)), {"rows": rows, "prompts": rows, "pairs": pairs, "duplicates": 0})
        by_format.append(run)

    sizes = {"jsonl": path.stat().st_size, **{name: p.stat().st_size for name, p in format_paths.items()}}
    print_table(stats, setup, [baseline, first, again, *by_format], database, sizes)
    return result_line(stats, baseline, first, again, database, by_format)


def _slug(format_name: str) -> str:
    return f"{SLUG}-{format_name.replace('.', '-')}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="Rows in the synthetic file (default 100000).")
    parser.add_argument("--seed", type=int, default=1234, help="Seed of the synthetic data (default 1234).")
    parser.add_argument(
        "--database-url",
        help="Default: a fresh SQLite file in the temporary directory. A PostgreSQL URL is only used to connect: "
        "a dedicated database bench_import_<pid> is created and dropped.",
    )
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory (and PostgreSQL database).")
    parser.add_argument(
        "--formats",
        default=",".join(FORMATS),
        help=f"Other formats to import the same rows from, comma-separated (default {','.join(FORMATS)}; '' for none).",
    )
    args = parser.parse_args(argv)
    args.formats = [name for name in args.formats.split(",") if name]
    unknown = set(args.formats) - set(FORMATS)
    if unknown:
        parser.error(f"unknown formats: {', '.join(sorted(unknown))} (choose from {', '.join(FORMATS)})")
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench_import_"))
    database_url = args.database_url or f"sqlite:///{workdir / 'bench.sqlite3'}"
    postgres_name = None  # set once the dedicated PostgreSQL database exists
    try:
        if database_kind(database_url) == "postgresql":
            name = f"bench_import_{os.getpid()}"
            database_url, postgres_name = postgres_create(args.database_url, name), name
        result = benchmark(args.rows, args.seed, database_url, workdir, args.formats)
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
