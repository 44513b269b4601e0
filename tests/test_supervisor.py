"""`manage.py serve` survives kill -9 of one of its processes: a real serve (gunicorn, both Celery workers, beat) on
a free port, with a generation job running on the gpu worker. kill -9 of the gpu worker's main process: the web app
keeps answering, the worker is restarted (a new pid, logged), the others keep their pids, and the job is marked failed
at once (well before the reaper's 90 s). Then kill -9 of gunicorn's master: the web app is back within seconds."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from generation.models import GenerationJob, ModelVersion
from tests.factories import ProjectFactory
from tests.test_demo import free_port
from tests.test_dead_workers import long_generation
from tests import worker
from tests.worker import Output, broker, wait_until

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@contextmanager
def filesystem_broker(folder: Path):
    """This process enqueues into a broker folder of its own, which the serve under test reads."""
    options = {name: str(folder / sub) for name, sub in (("data_folder_in", "queue"), ("data_folder_out", "queue"),
                                                         ("control_folder", "control"), ("processed_folder", "processed"))}
    options["store_processed"] = False
    for name in ("data_folder_in", "control_folder", "processed_folder"):
        Path(options[name]).mkdir(parents=True, exist_ok=True)
    with broker("filesystem://", transport_options=options):
        yield


def children_of(parent_pid: int) -> dict[int, str]:
    """pid -> command line of each process ``parent_pid`` started, from /proc (Celery retitles its processes; their
    arguments stay in the title)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        if ppid == parent_pid:
            children[int(stat.parent.name)] = cmdline
    return children


def serve_children(serve_pid: int) -> dict[str, int]:
    """The processes serve started, by name, from /proc."""
    names = {}
    for pid, cmdline in children_of(serve_pid).items():
        for name, marker in (("web", "gunicorn"), ("worker-gpu", "--queues gpu"), ("worker-default", "--queues default"), ("beat", " beat ")):
            if marker in cmdline:
                names[name] = pid
    return names


def answers(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=5).status == 200
    except OSError:
        return False


@pytest.mark.django_db(transaction=True)
def test_serve_restarts_a_killed_process_and_fails_its_job_at_once(tmp_path, tiny_model):
    port = free_port()
    env = {**os.environ, "DATABASE_URL": worker.test_database_url(), "DJANGO_SETTINGS_MODULE": "tests.settings",
           "PREFLOOP_DATA_DIR": str(tmp_path), "CELERY_BROKER_URL": "filesystem://"}
    proc = subprocess.Popen([sys.executable, "manage.py", "serve", "--port", str(port), "--web-workers", "2"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Output(proc)
    url = f"http://127.0.0.1:{port}/login/"
    try:
        output.wait_for(r"Prefloop is running at", timeout=120)
        wait_until(lambda: answers(url), 60, f"for the web app:\n{output.text}")
        wait_until(lambda: len(serve_children(proc.pid)) == 4, 30, str(serve_children(proc.pid)))
        before = serve_children(proc.pid)

        with filesystem_broker(tmp_path / "broker"):
            job = long_generation(ProjectFactory(responses_per_item=2), ModelVersion.objects.create(name="tiny", base_model=tiny_model))
        wait_until(lambda: GenerationJob.objects.get(pk=job.pk).prompts_done > 0, 180, f"for the job to be under way:\n{output.text}")
        job.refresh_from_db()
        assert job.status == "running" and job.worker.endswith(f":{job.worker.rsplit(':', 1)[1]}")

        killed_at = time.monotonic()
        os.kill(before["worker-gpu"], signal.SIGKILL)
        assert answers(url)
        wait_until(lambda: GenerationJob.objects.get(pk=job.pk).status != "running", 20, f"for the job to be failed:\n{output.text}")
        job_failed_after = time.monotonic() - killed_at
        job.refresh_from_db()
        assert job.status == "failed" and job.error == GenerationJob.dead_worker_message
        wait_until(lambda: serve_children(proc.pid).get("worker-gpu", before["worker-gpu"]) != before["worker-gpu"], 20, output.text)
        restarted_after = time.monotonic() - killed_at
        output.wait_for(r"restarting worker-gpu in 1s \(exit -9", timeout=5)
        assert answers(url)
        after_gpu = serve_children(proc.pid)
        assert {name: after_gpu[name] for name in ("web", "worker-default", "beat")} == {name: before[name] for name in ("web", "worker-default", "beat")}

        killed_at = time.monotonic()
        os.kill(before["web"], signal.SIGKILL)
        wait_until(lambda: serve_children(proc.pid).get("web", before["web"]) != before["web"], 20, output.text)
        wait_until(lambda: answers(url), 30, f"for the web app to come back:\n{output.text}")
        web_back_after = time.monotonic() - killed_at
        output.wait_for(r"restarting web in 1s \(exit -9", timeout=5)
        after_web = serve_children(proc.pid)
        assert {name: after_web[name] for name in ("worker-gpu", "worker-default", "beat")} == {name: after_gpu[name] for name in ("worker-gpu", "worker-default", "beat")}
        print(f"job failed {job_failed_after:.1f} s after the kill, worker-gpu restarted after {restarted_after:.1f} s, "
              f"the web app answered again {web_back_after:.1f} s after gunicorn's master was killed")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, output.text
    assert not serve_children(proc.pid)
    assert len(re.findall(r"restarting", output.text)) == 2, output.text


def test_a_process_that_keeps_exiting_at_once_stops_serve_with_its_code(monkeypatch, caplog):
    """Back-off doubles from the first delay; the 5th quick exit in a row gives up and stops the others."""
    from config import processes

    monkeypatch.setattr(processes, "FIRST_BACKOFF_SECONDS", 0.05)
    crasher = processes.ProcessSpec("crasher", [sys.executable, "-c", "import sys; sys.exit(3)"])
    sleeper = processes.ProcessSpec("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"])
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    exits = []
    try:
        with caplog.at_level("INFO", logger="config.processes"):
            code = processes.supervise([crasher, sleeper], on_exit=lambda name, pids: exits.append((name, pids)))
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    assert code == 3
    delays = re.findall(r"restarting crasher in ([\d.]+)s \(exit 3\)", caplog.text)
    assert delays == ["0.05", "0.1", "0.2", "0.4"], caplog.text
    assert "crasher exited (exit 3) 5 times in a row" in caplog.text
    assert [name for name, _ in exits] == ["crasher"] * 5 and all(len(pids) == 1 for _, pids in exits)
    sleeper_pid = int(re.search(r"started sleeper \(pid (\d+)\)", caplog.text).group(1))
    assert not Path(f"/proc/{sleeper_pid}").exists()
