"""Benchmark of the artifact store (config/artifacts.py): upload and download throughput of a model folder through
the store against a plain file copy of the same folder, and the cost of a cache hit.

The folder is the default model's (SmolLM2-135M-Instruct: model.safetensors, tokenizer and configuration, about
270 MB): var/models/smollm2-135m-instruct (where ``generation.services.default_model_prepare`` builds it with the
default data directory), var/bench/models or var/test/models when built there, else built once into var/bench/models
with ``generation.backends.default_model.build`` (about 40 s, kept for later runs, shared with the other benches);
or any folder with --folder.

What it measures, in this process (Django set up with a temporary PREFLOOP_DATA_DIR, PREFLOOP_ARTIFACTS_URL pointing
at the store and PREFLOOP_CACHE_DIR at a temporary cache), each repetition:

* upload     - ``artifacts.publish(folder, key)``: every file put to the store (the key emptied beforehand, untimed,
               so no repetition pays for deleting the previous one).
* download   - ``artifacts.cached(uri)`` into an empty cache: the listing, every file fetched into a partial folder,
               the size checks, the rename into place (``downloaded=True`` is checked).
* cache hit  - ``artifacts.cached(uri)`` again: a listing of the store and a look at the cache marker, nothing
               fetched (``downloaded=False`` and the same path are checked). Reported in seconds.
* copy       - the baseline: ``shutil.copytree`` of the folder to another folder on the same disk (the temporary
               folder lives under var/bench/, next to the model folders), what a local store's ``publish`` does.

Throughput is MB/s with MB = 10**6 bytes of file content. upload_vs_copy and download_vs_copy are the store's
throughput over the copy's (1.0: as fast as a local copy). Neither side calls fsync: both measure writes into the
page cache, and the source folder is read once (hashed) before any timing, so every side reads it from memory.
The copy and store measurements alternate (copy first on odd repetitions, last on even ones), and the best (fastest)
of --repeats is reported for each figure: on this shared machine the noise only ever slows a run down. The bytes of
the first download are checked against the source (sha256 of each file), outside the timed part.

Stores:

* default    - moto's standalone S3-compatible server (``python -m moto.server``, as tests/s3_server.py starts it),
               on a free port of 127.0.0.1, started and stopped by this script, a fresh bucket, the store at
               ``s3://<bucket>/bench``. moto keeps every object in memory inside a local Python process: this
               measures the client path (fsspec, s3fs, botocore, multipart uploads) and HTTP over loopback, with a
               Python server on the same (2-core) machine taking its share of the CPU - not a real network or S3.
* --url s3://bucket/prefix - a real store (credentials and endpoint from the usual AWS_* variables); the bench writes
               under ``<prefix>/bench-artifacts-<random>/`` and deletes it at the end.
* --store local - a local-folder store in the temporary folder (another folder than the source, so ``publish``
               copies). The app reads a local store in place (``local_copy`` returns the path): the download and
               cache-hit figures then show what ``cached`` costs through fsspec's local filesystem, not what a job pays.

    .venv/bin/python bench/artifacts.py                    # moto S3, 2 repetitions: about a minute
    .venv/bin/python bench/artifacts.py --store local
    .venv/bin/python bench/artifacts.py --url s3://my-bucket/prefloop --repeats 3
    .venv/bin/python bench/artifacts.py --folder var/runs/12/adapter

Temporary folders (cache, copies, local store, the moto log) are removed at the end (--keep keeps them). The last
line printed is ``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from common import BenchError, cpu_calibration, default_model_folder

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
# bench/training.py and bench/generation.py would shadow the apps: the repository root goes first on sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(REPO))

PYTHON = sys.executable
TEMP_PARENT = REPO / "var" / "bench"  # the same disk as the model folders: the copy baseline stays on one disk
MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "prefloop-bench", "AWS_SECRET_ACCESS_KEY": "prefloop-bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}
MB = 1e6


# --- moto's S3 server ------------------------------------------------------------------------------------------------


class MotoServer:
    """moto's standalone S3-compatible server on a free local port, its output in a log file."""

    def __init__(self, log: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as output:
            self.process = subprocess.Popen([PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                            stdout=output, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 60) -> float:
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2)
                return time.perf_counter() - started
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.2)
        tail = "\n".join(self.log.read_text(errors="replace").strip().splitlines()[-10:])
        raise BenchError(f"moto's S3 server did not answer on {self.url} (is moto[server] installed in {PYTHON}?):\n{tail}")

    @property
    def env(self) -> dict:
        return {**MOTO_CREDENTIALS, "AWS_ENDPOINT_URL": self.url}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- helpers ---------------------------------------------------------------------------------------------------------


def model_folder(args: argparse.Namespace) -> Path:
    if args.folder:
        folder = Path(args.folder).expanduser().resolve()
        if not folder.is_dir():
            raise BenchError(f"--folder {args.folder}: not a folder")
        return folder
    from generation.backends.default_model import DefaultModelUnavailable

    try:
        return default_model_folder()
    except DefaultModelUnavailable as exc:
        raise BenchError(str(exc)) from exc


def folder_files(folder: Path, *, skip: tuple[str, ...] = ()) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in skip}


def sha256_files(files: dict[str, Path]) -> dict[str, str]:
    digests = {}
    for rel, path in files.items():
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        digests[rel] = digest.hexdigest()
    return digests


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def setup_django(workdir: Path, store_url: str) -> None:
    """Django with a temporary data directory, the store at ``store_url`` and an empty cache folder."""
    os.environ.update({
        "PREFLOOP_DATA_DIR": str(workdir / "data"),
        "PREFLOOP_ARTIFACTS_URL": store_url,
        "PREFLOOP_CACHE_DIR": str(workdir / "cache"),
        "PREFLOOP_LOG_LEVEL": os.environ.get("PREFLOOP_LOG_LEVEL", "WARNING"),  # artifacts' own timing lines: --verbose
    })
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings

    if settings.ARTIFACTS_URL != store_url.rstrip("/") and settings.ARTIFACTS_URL != str(Path(store_url).resolve()):
        raise BenchError(f"settings.ARTIFACTS_URL is {settings.ARTIFACTS_URL}, not {store_url}")


@dataclass
class Repetition:
    copy_s: float
    upload_s: float
    download_s: float
    hit_s: float


# --- the benchmark ---------------------------------------------------------------------------------------------------


def measure_copy(source: Path, workdir: Path) -> float:
    target = workdir / "copy"
    remove_tree(target)
    started = time.perf_counter()
    shutil.copytree(source, target)
    elapsed = time.perf_counter() - started
    shutil.rmtree(target)
    return elapsed


def measure_store(source: Path, key: str, expected: dict[str, str] | None) -> tuple[float, float, float, str]:
    """(upload s, download s, cache hit s, uri). ``expected``: sha256 by file to check the download against."""
    from django.conf import settings

    from config import artifacts

    uri = artifacts.store_uri(key)
    artifacts.remove(uri)  # untimed: publish would delete the previous repetition's copy first
    started = time.perf_counter()
    published = artifacts.publish(source, key)
    upload = time.perf_counter() - started
    if published != uri:
        raise BenchError(f"publish returned {published}, expected {uri}")

    cache = Path(settings.ARTIFACTS_CACHE_DIR)
    remove_tree(cache)  # an empty cache
    started = time.perf_counter()
    entry = artifacts.cached(uri)
    download = time.perf_counter() - started
    if not entry.downloaded:
        raise BenchError(f"the first cached({uri}) found it in an empty cache")
    if expected is not None:
        got = sha256_files(folder_files(entry.path, skip=(artifacts.CACHE_MARKER,)))
        if got != expected:
            differ = sorted(set(got) ^ set(expected) | {rel for rel in got.keys() & expected.keys() if got[rel] != expected[rel]})
            raise BenchError(f"the downloaded folder differs from the source: {', '.join(differ)}")

    started = time.perf_counter()
    again = artifacts.cached(uri)
    hit = time.perf_counter() - started
    if again.downloaded or again.path != entry.path:
        raise BenchError(f"the second cached({uri}) downloaded again (downloaded={again.downloaded}, {again.path} vs {entry.path})")
    remove_tree(cache)
    return upload, download, hit, uri


def benchmark(args: argparse.Namespace, workdir: Path, store_url: str, store_name: str) -> str:
    from config import artifacts

    source = model_folder(args)
    files = folder_files(source)
    if not files:
        raise BenchError(f"{source} holds no files")
    size = sum(path.stat().st_size for path in files.values())
    print(f"Folder {source}: {len(files)} files, {size / MB:.1f} MB", flush=True)
    print(f"Store  {store_url} ({store_name})", flush=True)
    started = time.perf_counter()
    expected = sha256_files(files)  # also brings the folder into the page cache before any timing
    print(f"sha256 of the source: {time.perf_counter() - started:.1f} s (untimed; reads it into the page cache)", flush=True)

    key = f"bench-artifacts-{uuid.uuid4().hex[:12]}/{source.name}"
    artifacts.exists(artifacts.store_uri(key))  # imports fsspec / s3fs / botocore before the first timing
    print(f"CPU calibration before: {cpu_calibration():.1f} ms", flush=True)
    repetitions: list[Repetition] = []
    uri = artifacts.store_uri(key)
    try:
        for number in range(1, args.repeats + 1):
            check = expected if number == 1 else None
            if number % 2:
                copy = measure_copy(source, workdir)
                upload, download, hit, uri = measure_store(source, key, check)
            else:
                upload, download, hit, uri = measure_store(source, key, check)
                copy = measure_copy(source, workdir)
            repetitions.append(Repetition(copy, upload, download, hit))
            print(f"repetition {number}: copy {copy:.2f} s ({size / MB / copy:.0f} MB/s), upload {upload:.2f} s "
                  f"({size / MB / upload:.0f} MB/s), download {download:.2f} s ({size / MB / download:.0f} MB/s), "
                  f"cache hit {hit * 1000:.1f} ms" + (", download verified (sha256 of every file)" if check else ""), flush=True)
    finally:
        artifacts.remove(artifacts.join(artifacts.store_root(), key.split("/")[0]))
    print(f"CPU calibration after: {cpu_calibration():.1f} ms", flush=True)

    best = Repetition(*(min(getattr(r, name) for r in repetitions) for name in ("copy_s", "upload_s", "download_s", "hit_s")))
    copy_rate, upload_rate, download_rate = (size / MB / seconds for seconds in (best.copy_s, best.upload_s, best.download_s))
    print()
    print(f"Best of {args.repeats}: upload {upload_rate:.0f} MB/s ({upload_rate / copy_rate:.2f}x the copy), download "
          f"{download_rate:.0f} MB/s ({download_rate / copy_rate:.2f}x the copy), copy {copy_rate:.0f} MB/s, cache hit "
          f"{best.hit_s * 1000:.1f} ms")
    if store_name == "moto-s3":
        print("NOTE: moto keeps objects in memory in a local Python process: this is the client and HTTP path, not a real network or S3.")
    elif store_name == "local":
        print("NOTE: the app reads a local store in place; download and cache hit are what cached() would cost on it.")
    fields = {
        "store": store_name, "size_mb": f"{size / MB:.1f}", "files": len(files),
        "upload_mb_per_s": f"{upload_rate:.1f}", "download_mb_per_s": f"{download_rate:.1f}", "copy_mb_per_s": f"{copy_rate:.1f}",
        "upload_vs_copy": f"{upload_rate / copy_rate:.3f}", "download_vs_copy": f"{download_rate / copy_rate:.3f}",
        "cache_hit_s": f"{best.hit_s:.4f}", "repeats": args.repeats,
    }
    return "RESULT " + " ".join(f"{name}={value}" for name, value in fields.items())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="Measure this store (s3://bucket/prefix; credentials and endpoint from the AWS_* "
                                      "variables) instead of a local moto server.")
    parser.add_argument("--store", choices=["moto", "local"], default="moto",
                        help="Without --url: moto's S3 server started here (default), or a local folder.")
    parser.add_argument("--repeats", type=int, default=2, help="Repetitions; the best of each figure is reported (default 2).")
    parser.add_argument("--folder", help="The folder to measure (default: the default model's, built if needed).")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary folder (cache, copies, local store, moto log).")
    parser.add_argument("--verbose", action="store_true", help="Show the artifact store's own log lines.")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.url and args.store != "moto":
        parser.error("--url and --store local exclude each other")
    if args.url and "://" not in args.url:
        parser.error("--url takes an object store URI (s3://bucket/prefix); for a local folder use --store local")
    if args.folder and not Path(args.folder).expanduser().is_dir():
        parser.error(f"--folder {args.folder}: not a folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.verbose:
        os.environ["PREFLOOP_LOG_LEVEL"] = "INFO"
    started = time.perf_counter()
    TEMP_PARENT.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench_artifacts_", dir=TEMP_PARENT))
    server = None
    try:
        if args.url:
            store_url, store_name = args.url.rstrip("/"), args.url.split("://", 1)[0]
        elif args.store == "local":
            store_url, store_name = str(workdir / "store"), "local"
        else:
            server = MotoServer(workdir / "moto.log")
            print(f"moto's S3 server on {server.url}: up in {server.wait():.1f} s", flush=True)
            os.environ.pop("AWS_PROFILE", None)
            os.environ.update(server.env)
            import fsspec

            bucket = f"prefloop-bench-{uuid.uuid4().hex[:12]}"
            fsspec.filesystem("s3", use_listings_cache=False, skip_instance_cache=True).mkdir(bucket)
            store_url, store_name = f"s3://{bucket}/bench", "moto-s3"
        setup_django(workdir, store_url)
        result = benchmark(args, workdir, store_url, store_name)
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            print(f"Kept {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"Total wall time {time.perf_counter() - started:.0f} s.")
    print(result)  # last, so the RESULT line ends the output
    return 0


if __name__ == "__main__":
    sys.exit(main())
