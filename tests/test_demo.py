"""The README's first command, after installation: `python manage.py demo` prepares everything and serves the app
with a real Celery worker on the embedded defaults (SQLite, a broker without a server)."""

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from annotation.services import DEMO_PASSWORD
from generation.backends import default_model
from generation.services import DEFAULT_MODEL_NAME
from tests.worker import Output

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def embedded_env(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}}
    return {**env, "PREFLOOP_DATA_DIR": str(data_dir)}


def log_in(base_url: str, username: str, password: str) -> urllib.request.OpenerDirector:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    page = opener.open(base_url + "login/").read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token}).encode()
    opener.open(base_url + "login/", body)
    return opener


def test_demo_sets_up_and_serves_the_app_and_the_workers(tmp_path):
    # Reuse the default model the suite builds once, instead of building it again (a minute) in this data dir.
    built = default_model.build(settings.MODELS_DIR / DEFAULT_MODEL_NAME)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / DEFAULT_MODEL_NAME).symlink_to(built)
    env, port = embedded_env(tmp_path), free_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "demo", "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = Output(proc)
    try:
        output.wait_for(r"Prefloop is running at", timeout=180)
        assert f"password for all: {DEMO_PASSWORD}" in output.text
        for username in ("admin", "labeler1", "labeler2", "researcher"):
            assert re.search(rf"^\s+{username}\s", output.text, re.MULTILINE)
        assert (tmp_path / "db.sqlite3").exists()

        assert "Queued generation job" in output.text
        base_url = f"http://127.0.0.1:{port}/"
        _wait_for_http(base_url + "login/")
        labeler = log_in(base_url, "labeler1", DEMO_PASSWORD)
        assert "Demo: helpful assistant" in labeler.open(base_url).read().decode()
        # The worker runs the demo's generation job with the default model; items reach labelers batch by batch.
        deadline = time.monotonic() + 240
        while 'class="ranker"' not in (page := labeler.open(base_url + "projects/demo/label/").read().decode()):
            assert time.monotonic() < deadline, output.text
            time.sleep(2)
        assert 'data-letter="D"' in page
        models = log_in(base_url, "researcher", DEMO_PASSWORD).open(base_url + "models/").read().decode()
        assert DEFAULT_MODEL_NAME in models

        ping = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "config", "inspect", "ping", "--timeout", "10"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )
        assert "default@" in ping.stdout and "gpu@" in ping.stdout, ping.stdout + ping.stderr
        assert "beat: Starting" in output.text  # Celery beat sends the dead-job reaper
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, output.text


def _wait_for_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
