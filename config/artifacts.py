"""The artifact store: models, adapters, training-run folders and exports, addressed by URI, so that any worker of a
deployment can read what another one wrote.

``PREFLOOP_ARTIFACTS_URL`` names the store:

- a local folder (the default: ``$PREFLOOP_DATA_DIR``, where everything has always lived). A URI is then a plain
  absolute path, read in place. A shared folder (NFS) mounted at the same path on every machine works the same way.
- ``s3://bucket/prefix``: S3 or an S3-compatible server (MinIO, Ceph, ...), through fsspec and s3fs. Credentials and
  the endpoint come from the usual variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``,
  ``AWS_DEFAULT_REGION``, ``AWS_PROFILE``), read by botocore.

Writing: a job writes into a local work folder and ``publish`` copies it to its key in the store, returning the URI
to record. In a local store that already holds the folder at that key (the default), publishing copies nothing.

Reading: ``local_copy(uri)`` gives a path this process can load from. A remote folder or file is downloaded into
``$PREFLOOP_CACHE_DIR/<content hash>``, where the hash covers the names, sizes and ETags (the store's checksum of
each object's bytes) of its files: a second job on the same machine, under whatever URI names the same bytes, finds
it there and downloads nothing. A download lands in a temporary folder that is renamed into place once complete, so
processes sharing a cache never load half a copy, and holds a lock meanwhile, so two workers of one machine starting
on the same model download it once. ``open_file`` streams one file (a browser download).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from django.conf import settings

logger = logging.getLogger(__name__)

# Files that hold weights: left out when only a model's tokenizer and configuration are wanted.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack")
CACHE_MARKER = ".prefloop-complete"


class ArtifactNotFound(FileNotFoundError):
    pass


def is_remote(uri: str) -> bool:
    """A URI of an object store (s3://...), as opposed to a local path or a Hugging Face hub id."""
    return "://" in uri and not uri.startswith("file://")


def scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if is_remote(uri) else ""


def registrable(uri: str) -> bool:
    """Whether a model may be registered at this remote URI: S3, or the store's own scheme (no http:// and such,
    which would have the server fetch what an admin names)."""
    return scheme(uri) in {"s3", scheme(store_root())} - {""}


def store_root() -> str:
    return settings.ARTIFACTS_URL.rstrip("/")


def store_uri(key: str) -> str:
    """The URI of ``key`` ("artifacts/training-runs/3") in the store."""
    root = store_root()
    return f"{root}/{key.strip('/')}" if is_remote(root) else str(Path(root) / key)


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts]) if is_remote(uri) else str(Path(uri).joinpath(*parts))


def file_name(uri: str) -> str:
    return PurePosixPath(uri).name


def parent(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[0] if is_remote(uri) else str(Path(uri).parent)


# --- writing ---------------------------------------------------------------------------------------------------------


def publish(local: Path, key: str, *, move: bool = False) -> str:
    """Copy a local file or folder to ``key`` in the store (replacing what was there) and return its URI. ``move``
    removes the local copy afterwards, unless the store keeps it where it was written."""
    target = store_uri(key)
    if not is_remote(target):
        in_place = _copy_locally(Path(local), Path(target))
        if move and not in_place:
            _remove_local(Path(local))
        return target
    fs, path = _filesystem(target)
    files = _local_files(Path(local))
    if fs.exists(path):
        fs.rm(path, recursive=True)
    started = time.monotonic()
    remote = [path if rel == "" else f"{path}/{rel}" for rel in files]
    fs.put([str(files[rel]) for rel in files], remote)
    logger.info("Uploaded %s to %s (%d files, %.1f MB) in %.1f s", local, target, len(files),
                sum(f.stat().st_size for f in files.values()) / 1e6, time.monotonic() - started)
    if move:
        _remove_local(Path(local))
    return target


def _copy_locally(local: Path, target: Path) -> bool:
    """Copy into a local store; True when there was nothing to copy (the store's root holds the work folder)."""
    if target.resolve() == local.resolve():
        return True
    _remove_local(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if local.is_dir():
        shutil.copytree(local, target)
    else:
        shutil.copy2(local, target)
    return False


def _remove_local(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _local_files(local: Path) -> dict[str, Path]:
    """Relative POSIX name -> path of every file of a folder ("" -> the file itself for a file)."""
    if local.is_file():
        return {"": local}
    return {path.relative_to(local).as_posix(): path for path in sorted(local.rglob("*")) if path.is_file()}


def remove(uri: str) -> None:
    """Delete a file or folder of the store (nothing when it is not there)."""
    if not is_remote(uri):
        _remove_local(Path(uri))
        return
    fs, path = _filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


# --- reading ---------------------------------------------------------------------------------------------------------


def exists(uri: str) -> bool:
    if not is_remote(uri):
        return Path(uri).exists()
    fs, path = _filesystem(uri)
    return fs.exists(path)


def open_file(uri: str) -> BinaryIO:
    """A file of the store opened for reading in binary, streamed from the store (ArtifactNotFound if missing)."""
    if not is_remote(uri):
        if not Path(uri).is_file():
            raise ArtifactNotFound(uri)
        return open(uri, "rb")
    fs, path = _filesystem(uri)
    if not fs.isfile(path):
        raise ArtifactNotFound(uri)
    return fs.open(path, "rb")


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    downloaded: bool  # False: found in the cache
    files: int
    bytes: int


def local_copy(uri: str, *, weights: bool = True) -> str:
    """A path this process can load ``uri`` from: a remote file or folder is fetched into the local cache (see
    ``cached``); anything else (a local path, a Hugging Face hub id) is returned as it is. ``weights=False`` leaves
    out weight files, for reading a model's tokenizer and configuration only."""
    if not uri or not is_remote(uri):
        return uri
    return str(cached(uri, weights=weights).path)


def cached(uri: str, *, weights: bool = True) -> CacheEntry:
    """Fetch a remote file or folder into $PREFLOOP_CACHE_DIR/<content hash> unless it is there already."""
    fs, path = _filesystem(uri)
    listing = _remote_files(fs, path, weights=weights)
    if not listing:
        raise ArtifactNotFound(f"Nothing at {uri} in the artifact store.")
    digest = _content_hash(listing)
    cache_dir = Path(settings.ARTIFACTS_CACHE_DIR)
    entry = cache_dir / digest
    size = sum(info["size"] for info in listing.values())
    if (entry / CACHE_MARKER).is_file():
        (entry / CACHE_MARKER).touch()  # its last use, for pruning
        return CacheEntry(path=_entry_path(entry, listing), downloaded=False, files=len(listing), bytes=size)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Two workers of one machine starting on the same model: one downloads, the other waits and then finds it.
    with _exclusive(cache_dir / f".{digest}.lock"):
        if (entry / CACHE_MARKER).is_file():
            return CacheEntry(path=_entry_path(entry, listing), downloaded=False, files=len(listing), bytes=size)
        _fetch(fs, uri, listing, cache_dir, entry, size)
    if settings.ARTIFACTS_CACHE_MAX_BYTES:
        prune_cache(settings.ARTIFACTS_CACHE_MAX_BYTES)
    return CacheEntry(path=_entry_path(entry, listing), downloaded=True, files=len(listing), bytes=size)


@contextmanager
def _exclusive(lock_path: Path):
    """An advisory lock between the processes of this machine (flock: released if the holder dies)."""
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _fetch(fs, uri: str, listing: dict[str, dict], cache_dir: Path, entry: Path, size: int) -> None:
    started = time.monotonic()
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=cache_dir))
    try:
        _download(fs, listing, partial)
        (partial / CACHE_MARKER).write_text(json.dumps({"uri": uri, "files": len(listing), "bytes": size}))
        _move_into_place(partial, entry)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    logger.info("Downloaded %s into the cache (%d files, %.1f MB) in %.1f s", uri, len(listing), size / 1e6, time.monotonic() - started)


@dataclass(frozen=True)
class CachedCopy:
    path: Path
    bytes: int
    last_used: float  # seconds since the epoch


IN_USE_SECONDS = 3600  # an entry used this recently may be loading in a job: pruning leaves it


def cache_entries() -> list[CachedCopy]:
    """The complete entries of this machine's cache, least recently used first."""
    folder = Path(settings.ARTIFACTS_CACHE_DIR)
    if not folder.is_dir():
        return []
    entries = [
        CachedCopy(path=entry, bytes=sum(f.stat().st_size for f in entry.rglob("*") if f.is_file()), last_used=(entry / CACHE_MARKER).stat().st_mtime)
        for entry in folder.iterdir() if (entry / CACHE_MARKER).is_file()
    ]
    return sorted(entries, key=lambda entry: entry.last_used)


def prune_cache(max_bytes: int) -> list[CachedCopy]:
    """Delete the least recently used entries until the cache holds at most ``max_bytes``, never one used within
    IN_USE_SECONDS; returns what was deleted."""
    entries = cache_entries()
    total = sum(entry.bytes for entry in entries)
    removed = []
    for entry in entries:
        if total <= max_bytes or entry.last_used > time.time() - IN_USE_SECONDS:
            break
        (entry.path / CACHE_MARKER).unlink()  # first: a reader never takes a half-deleted entry for a complete one
        shutil.rmtree(entry.path, ignore_errors=True)
        total -= entry.bytes
        removed.append(entry)
        logger.info("Pruned %s from the artifact cache (%.1f MB, last used %s)", entry.path.name, entry.bytes / 1e6, time.ctime(entry.last_used))
    return removed


def _remote_files(fs, path: str, *, weights: bool) -> dict[str, dict]:
    """Relative name -> object info of every file under ``path`` ("" for a single file)."""
    if fs.isfile(path):
        found = {"": fs.info(path)}
    else:
        found = {name[len(path):].lstrip("/"): info for name, info in fs.find(path, detail=True).items()}
    return {rel: info for rel, info in found.items() if weights or not rel.endswith(WEIGHT_SUFFIXES) or rel == ""}


def _content_hash(listing: dict[str, dict]) -> str:
    """sha256 over (name, size, checksum) of each file: the same bytes under another prefix hash alike."""
    rows = sorted((rel, info["size"], str(info.get("ETag") or info.get("md5Hash") or info.get("checksum") or "")) for rel, info in listing.items())
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _entry_path(entry: Path, listing: dict[str, dict]) -> Path:
    """A folder's cache entry is the folder; a single file is kept under its own name inside the entry."""
    if set(listing) == {""}:
        return entry / file_name(listing[""]["name"])
    return entry


def _download(fs, listing: dict[str, dict], into: Path) -> None:
    sources, targets = [], []
    for rel, info in listing.items():
        target = into / (rel or file_name(info["name"]))
        target.parent.mkdir(parents=True, exist_ok=True)
        sources.append(info["name"])
        targets.append(str(target))
    fs.get(sources, targets)
    for rel, info in listing.items():
        got = (into / (rel or file_name(info["name"]))).stat().st_size
        if got != info["size"]:
            raise OSError(f"Incomplete download of {info['name']}: {got} of {info['size']} bytes.")


def _move_into_place(partial: Path, entry: Path) -> None:
    """Under the entry's lock (``cached``): nobody else writes it meanwhile."""
    if entry.exists():
        shutil.rmtree(entry)  # an entry without its marker: left by a writer that died
    os.rename(partial, entry)


def _filesystem(uri: str):
    """(fsspec filesystem, path inside it). Listings are never cached: another machine may have written since."""
    import fsspec

    protocol = uri.split("://", 1)[0]
    options = {"use_listings_cache": False, "skip_instance_cache": True} if protocol in ("s3", "s3a") else {}
    return fsspec.core.url_to_fs(uri, **options)
