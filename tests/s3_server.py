"""A real S3-compatible HTTP server for the tests of the artifact store: moto's standalone server (``moto[server]``
from PyPI, ``python -m moto.server``), one per test session, holding its buckets in memory. Nothing patches a
client: s3fs (and botocore under it) talk HTTP to it as they would to S3 or MinIO."""

import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "prefloop-test", "AWS_SECRET_ACCESS_KEY": "prefloop-test-secret", "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    def __init__(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._wait_until_it_answers()

    def _wait_until_it_answers(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2)
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.2)
        raise RuntimeError(f"moto's S3 server did not answer on {self.url}")

    @property
    def env(self) -> dict:
        """What a process needs to reach it: botocore's own variables."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.url}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


class S3Store:
    """A fresh bucket on the server, used as this test's artifact store (settings and environment point at it)."""

    def __init__(self, server: S3Server, bucket: str):
        self.server, self.bucket = server, bucket
        self.url = f"s3://{bucket}/prefloop"

    def env(self, cache_dir) -> dict:
        """The environment of a worker using this store, with its own cache folder."""
        return {**self.server.env, "PREFLOOP_ARTIFACTS_URL": self.url, "PREFLOOP_CACHE_DIR": str(cache_dir)}

    def keys(self) -> list[str]:
        return sorted(name.removeprefix(f"{self.bucket}/") for name in filesystem().find(self.bucket))


def filesystem():
    import fsspec

    return fsspec.filesystem("s3", use_listings_cache=False, skip_instance_cache=True)


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3_store(s3_server, settings, monkeypatch, tmp_path):
    """Point this test's artifact store at a new bucket of the S3 server, with an empty cache."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    bucket = f"prefloop-{uuid.uuid4().hex[:12]}"
    filesystem().mkdir(bucket)
    store = S3Store(s3_server, bucket)
    settings.ARTIFACTS_URL = store.url
    settings.ARTIFACTS_CACHE_DIR = tmp_path / "cache"
    yield store
    filesystem().rm(bucket, recursive=True)  # the server holds every bucket in memory until the session ends
