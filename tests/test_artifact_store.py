"""The artifact store (config/artifacts.py) on a local folder and on a real S3-compatible server (moto's standalone
server, see tests/s3_server.py): publishing, the content-hash cache, streaming, and the registry's checks."""

import os
import socket
import time
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from config import artifacts
from generation.services import model_version_register


def a_model_folder(root: Path, weights: bytes = b"\x00" * 4096) -> Path:
    folder = root / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "sub" / "extra.txt").write_text("nested")
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != artifacts.CACHE_MARKER}


def test_the_default_store_is_the_data_directory_and_publishing_there_copies_nothing(settings, tmp_path):
    assert settings.ARTIFACTS_URL == str(settings.DATA_DIR)
    settings.ARTIFACTS_URL = str(tmp_path / "store")
    work = tmp_path / "store" / "artifacts" / "x"
    folder = a_model_folder(work)
    uri = artifacts.publish(folder, "artifacts/x/model")
    assert uri == str(folder) and artifacts.local_copy(uri) == uri
    # From another local folder, it is copied (a shared NFS folder as the store).
    other = a_model_folder(tmp_path / "elsewhere")
    uri = artifacts.publish(other, "models/m")
    assert uri == str(tmp_path / "store" / "models" / "m") and tree(Path(uri)) == tree(other)
    assert artifacts.local_copy("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_s3_publish_then_fetch_into_the_cache_once(s3_store, settings, tmp_path):
    folder = a_model_folder(tmp_path)
    uri = artifacts.publish(folder, "models/m")
    assert uri == f"{s3_store.url}/models/m"
    assert s3_store.keys() == [f"prefloop/models/m/{name}" for name in ("config.json", "model.safetensors", "sub/extra.txt", "tokenizer.json")]

    first = artifacts.cached(uri)
    assert first.downloaded and first.files == 4 and first.path.parent == settings.ARTIFACTS_CACHE_DIR
    assert tree(first.path) == tree(folder)
    again = artifacts.cached(uri)
    assert not again.downloaded and again.path == first.path
    # The same bytes under another key are the same cache entry: the hash is of the content, not the name.
    copy = artifacts.publish(folder, "artifacts/elsewhere")
    assert artifacts.cached(copy).path == first.path and not artifacts.cached(copy).downloaded
    assert artifacts.local_copy(uri) == str(first.path)

    # New bytes: a new entry, downloaded.
    (folder / "model.safetensors").write_bytes(b"\x01" * 4096)
    artifacts.publish(folder, "models/m")
    changed = artifacts.cached(uri)
    assert changed.downloaded and changed.path != first.path and (changed.path / "model.safetensors").read_bytes() == b"\x01" * 4096

    # Tokenizer and configuration only: no weights.
    light = Path(artifacts.local_copy(uri, weights=False))
    assert sorted(tree(light)) == ["config.json", "sub/extra.txt", "tokenizer.json"]


def test_a_cache_entry_left_half_written_is_downloaded_again(s3_store, settings, tmp_path):
    uri = artifacts.publish(a_model_folder(tmp_path), "models/m")
    entry = artifacts.cached(uri).path
    (entry / artifacts.CACHE_MARKER).unlink()  # as if its writer died before the rename
    (entry / "config.json").write_text("garbage")
    fresh = artifacts.cached(uri)
    assert fresh.downloaded and fresh.path == entry and (entry / "config.json").read_text() == '{"model_type": "llama"}'
    assert not [p for p in settings.ARTIFACTS_CACHE_DIR.iterdir() if p.name.startswith(".partial-")]


def test_s3_files_stream_and_missing_ones_say_so(s3_store, tmp_path):
    data = tmp_path / "exports" / "7"
    data.mkdir(parents=True)
    (data / "rows.jsonl").write_bytes(os.urandom(300_000))
    uri = artifacts.publish(data, "exports/7")
    with artifacts.open_file(artifacts.join(uri, "rows.jsonl")) as stream:
        assert stream.read() == (data / "rows.jsonl").read_bytes()
    single = artifacts.cached(artifacts.join(uri, "rows.jsonl"))
    assert single.path.name == "rows.jsonl" and single.path.read_bytes() == (data / "rows.jsonl").read_bytes()
    with pytest.raises(artifacts.ArtifactNotFound):
        artifacts.open_file(artifacts.join(uri, "nope.jsonl"))
    with pytest.raises(artifacts.ArtifactNotFound):
        artifacts.cached(f"{s3_store.url}/models/none")
    artifacts.remove(uri)
    assert not artifacts.exists(uri)


def test_models_and_adapters_register_from_s3_when_they_are_there(db, s3_store, tmp_path, tiny_model, tiny_adapter):
    base = artifacts.publish(Path(tiny_model), "models/tiny")
    adapter = artifacts.publish(Path(tiny_adapter), "models/tiny-adapter")
    version = model_version_register(name="from-s3", base_model=base + "/", adapter_path=adapter)
    assert (version.base_model, version.adapter_path) == (base, adapter)
    with pytest.raises(ValidationError, match="no config.json"):
        model_version_register(name="not-a-model", base_model=adapter)
    with pytest.raises(ValidationError, match="no adapter_config.json"):
        model_version_register(name="not-an-adapter", base_model=base, adapter_path=base)
    for uri in ("http://169.254.169.254/latest", "nosuchscheme://bucket/model", "file:///etc"):
        with pytest.raises(ValidationError):
            model_version_register(name="not-a-store", base_model=uri)
    with pytest.raises(ValidationError, match="is not a model folder"):
        model_version_register(name="no-such-bucket", base_model="s3://no-such-bucket-here/model")


def test_a_store_that_does_not_answer_is_a_clear_refusal(db, s3_store, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with monkeypatch.context() as patched, pytest.raises(ValidationError, match="cannot be read from here"):
        patched.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
        model_version_register(name="unreachable", base_model=f"{s3_store.url}/models/m")


def test_a_background_import_reads_its_upload_from_the_store_and_removes_it(db, s3_store, settings, tmp_path, project):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from annotation import imports

    settings.IMPORTS_DIR = tmp_path / "imports"
    rows = b"".join(b'{"prompt": "Question %d?"}\n' % n for n in range(50))
    job = imports.import_job_create(project=project, upload=SimpleUploadedFile("big.jsonl", rows))
    assert job.file_path.startswith(f"{s3_store.url}/imports/upload-") and job.file_path.endswith("/upload")
    assert not list(settings.IMPORTS_DIR.iterdir()), "the store keeps the only copy"
    job = imports.import_run(job.pk)
    assert job.status == "succeeded", job.error
    assert project.prompts.count() == 50 and not artifacts.exists(artifacts.parent(job.file_path))


def test_the_api_streams_an_export_from_the_store(db, s3_store, settings, tmp_path, api_client, users, project):
    import hashlib

    from annotation.models import Demonstration
    from tests.factories import PromptFactory

    settings.EXPORTS_DIR = tmp_path / "exports"
    for n in range(3):
        text = f"Answer {n}."
        Demonstration.objects.create(
            project=project, prompt=PromptFactory(project=project), text=text, text_hash=hashlib.sha256(text.encode()).hexdigest(),
            source="import", status="accepted",
        )
    api_client.force_authenticate(users["researcher"])
    created = api_client.post("/api/exports/", {"projects": [project.slug], "dataset": "sft", "format": "jsonl"}, format="json")
    assert created.status_code == 201, created.content
    export = created.json()
    download = api_client.get(export["data_url"])
    assert download.status_code == 200 and download["Content-Disposition"].startswith("attachment")
    body = b"".join(download.streaming_content)
    assert int(download["Content-Length"]) == len(body) == export["size_bytes"] and body.count(b"\n") == 3
    assert hashlib.sha256(body).hexdigest() == export["sha256"]
    artifacts.remove(f"{s3_store.url}/exports/{export['id']}")
    assert api_client.get(export["data_url"]).status_code == 404


def test_the_cache_is_pruned_least_recently_used_first_but_never_what_is_in_use(s3_store, settings, tmp_path):
    from io import StringIO

    from django.core.management import call_command

    uris = [artifacts.publish(a_model_folder(tmp_path / str(n), weights=bytes([n]) * 100_000), f"models/m{n}") for n in range(3)]
    entries = [artifacts.cached(uri).path for uri in uris]
    hours_ago = time.time() - 3 * 3600
    for n, entry in enumerate(entries):  # last used 3 h, 2.5 h and 2 h ago
        os.utime(entry / artifacts.CACHE_MARKER, (hours_ago + n * 1800, hours_ago + n * 1800))
    artifacts.cached(uris[0])  # a hit counts as a use: m0 is now the most recent
    size = sum(e.bytes for e in artifacts.cache_entries())

    out = StringIO()
    call_command("artifact_cache", "--prune-to-gb", "0", stdout=out)
    # m1 and m2 go, least recently used first; m0, used just now, stays even though the limit is 0.
    assert [e.path for e in artifacts.cache_entries()] == [entries[0]]
    assert "Deleted 2 cached copies" in out.getvalue() and f"{uris[0]}" in out.getvalue()
    assert not entries[1].exists() and not entries[2].exists() and size > 0

    settings.ARTIFACTS_CACHE_MAX_BYTES = 1  # pruned after each download: the new copy is in use, so it stays
    assert artifacts.cached(uris[1]).downloaded and len(artifacts.cache_entries()) == 2


def test_two_workers_of_one_machine_fetching_the_same_model_download_it_once(s3_store, settings, tmp_path):
    import threading

    # 30 MB: long enough a download for the two to overlap (without the lock both download).
    uri = artifacts.publish(a_model_folder(tmp_path, weights=os.urandom(30_000_000)), "models/m")
    start, results = threading.Barrier(2), []

    def fetch():
        start.wait()
        results.append(artifacts.cached(uri))

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(result.downloaded for result in results) == [False, True]
    assert results[0].path == results[1].path and tree(results[0].path) == tree(tmp_path / "model")
    assert [entry.path for entry in artifacts.cache_entries()] == [results[0].path]
    assert not [p for p in settings.ARTIFACTS_CACHE_DIR.iterdir() if p.name.startswith(".partial-")]
