"""A removed role, a deactivated user and a deleted token stop working on the very next request, in every web
process: a real gunicorn with two workers, each of which served the user before the change."""

import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token

from tests.factories import user_with_role
from tests.worker import REPO, Output, celery_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def web():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "2",
         "--threads", "1", "--access-logfile", "-", "--access-logformat", "pid=%(p)s status=%(s)s %(U)s"],
        cwd=REPO, env=celery_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = Output(process)
    output.wait_for(r"Booting worker.*\n?.*", timeout=60)
    deadline = time.monotonic() + 60
    while len(re.findall(r"Booting worker", output.text)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    yield f"http://127.0.0.1:{port}", output
    process.terminate()
    process.wait(timeout=30)


def get(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token}", "Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def statuses_by_worker(output: Output, path: str, since: int) -> dict[str, set[str]]:
    """pid -> statuses the workers answered for ``path`` in the access log lines after line ``since``."""
    time.sleep(0.3)  # the access log line is written after the response
    found: dict[str, set[str]] = {}
    for line in output.lines[since:]:
        match = re.search(r"pid=<(\d+)> status=(\d+) " + re.escape(path), line) or re.search(r"pid=(\d+) status=(\d+) " + re.escape(path), line)
        if match:
            found.setdefault(match.group(1), set()).add(match.group(2))
    return found


def served_by_both(base: str, output: Output, path: str, token: str, expected: int) -> None:
    """Ask until both workers answered (each request on a new connection), every answer being ``expected``."""
    since = len(output.lines)
    for _ in range(60):
        assert get(base + path, token) == expected
        if len(statuses_by_worker(output, path, since)) == 2:
            break
    by_worker = statuses_by_worker(output, path, since)
    assert len(by_worker) == 2, output.text[-2000:]
    assert all(statuses == {str(expected)} for statuses in by_worker.values()), by_worker


def test_access_changes_take_effect_on_the_next_request_in_every_process(web, project):
    base, output = web
    labeler = user_with_role("labeler", "lea-labeler")
    token = Token.objects.create(user=labeler).key
    path = f"/api/projects/{project.slug}/"

    served_by_both(base, output, path, token, 200)
    labeler.groups.remove(Group.objects.get(name="labeler"))
    served_by_both(base, output, path, token, 403)  # the role is gone: no role, no project

    labeler.groups.add(Group.objects.get(name="labeler"))
    served_by_both(base, output, path, token, 200)
    labeler.is_active = False
    labeler.save(update_fields=["is_active"])
    served_by_both(base, output, path, token, 401)

    labeler.is_active = True
    labeler.save(update_fields=["is_active"])
    served_by_both(base, output, path, token, 200)
    Token.objects.filter(key=token).delete()
    served_by_both(base, output, path, token, 401)
