"""The processes of one Prefloop machine: the web server, the Celery workers (one `default` worker, one `gpu` worker
per GPU) and Celery beat.

`python manage.py serve` runs them together under ``supervise``; a larger deployment runs the same command lines
under its own supervisor (systemd, Kubernetes), with more web workers. A machine that joins a deployment (a second
GPU box) runs only workers (``machine_processes`` without ``web``): Celery beat must run once per deployment.

The supervisor, in short: each process runs in its own process group. When one exits while serve is not stopping,
whatever is left of its group is killed, ``on_exit`` is told the pids its group ever had (so jobs running in them can
be marked failed at once), and it is started again after a back-off (1 s, doubling, at most 30 s; back to 1 s once
a start has run for 60 s), each exit and restart logged at WARNING. The others keep running. A process that exits
``GIVE_UP_AFTER`` times in a row, each time within 60 s of its start, is a configuration problem rather than a
fault: serve then stops everything and exits with its code. SIGINT / SIGTERM stop every process (SIGTERM, then
SIGKILL after a grace period).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: list[str]
    env: Mapping[str, str] = field(default_factory=dict)  # laid over the supervisor's environment


def web(host: str, port: int, workers: int | None = None, threads: int = 2, access_log: bool = False) -> ProcessSpec:
    """gunicorn with two processes per core: a request that waits on the database leaves the core to another
    process instead of to a thread of the same interpreter (measured by bench/labeling_loop.py)."""
    argv = [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"{host}:{port}",
            "--workers", str(workers or 2 * (os.cpu_count() or 1)), "--threads", str(threads), "--timeout", "120"]
    if access_log:
        argv += ["--access-logfile", "-"]
    return ProcessSpec("web", argv)


def default_worker(concurrency: int = 2) -> ProcessSpec:
    return ProcessSpec(
        "worker-default",
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--queues", "default", "--hostname", "default@%h",
         "--concurrency", str(concurrency), "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
    )


def gpu_worker(gpu: str | None = None) -> ProcessSpec:
    """The worker of GPU ``gpu`` (an index as nvidia-smi lists it), which sees only that GPU; without one, a worker
    that sees whatever the supervisor sees (no GPU, or all of them)."""
    name, hostname, env = "worker-gpu", "gpu@%h", {}
    if gpu is not None:
        # CUDA numbers GPUs fastest first unless told otherwise; nvidia-smi (and --gpus) by PCI bus.
        name, hostname, env = f"worker-gpu{gpu}", f"gpu{gpu}@%h", {"CUDA_VISIBLE_DEVICES": gpu, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    # One job at a time, and a fresh process per job: vLLM and CUDA give memory back only when the process exits.
    return ProcessSpec(
        name,
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--queues", "gpu", "--hostname", hostname,
         "--concurrency", "1", "--max-tasks-per-child", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
        env,
    )


def beat() -> ProcessSpec:
    """Celery beat: sends the periodic tasks (the dead-job reaper, see CELERY_BEAT_SCHEDULE) to the default queue."""
    return ProcessSpec(
        "beat", [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"],
    )


QUEUES = ("default", "gpu")


def machine_processes(*, queues: Collection[str], gpus: list[str], web: ProcessSpec | None = None) -> list[ProcessSpec]:
    """The processes of one machine: the workers of ``queues`` (one `gpu` worker per GPU in ``gpus``, one unpinned
    worker when there is none) and, on the main machine (the one given ``web``), the web server and Celery beat.
    Beat must run once per deployment: two would send every periodic task twice."""
    workers = [default_worker()] if "default" in queues else []
    if "gpu" in queues:
        workers += [gpu_worker(gpu) for gpu in gpus] or [gpu_worker()]
    return [web, *workers, beat()] if web else workers


# --- which GPUs -------------------------------------------------------------------------------------------------------


def parse_gpu_ids(text: str) -> list[str]:
    """"0,2" -> ["0", "2"]; raises ValueError for anything but distinct non-negative integers separated by commas."""
    ids = [part.strip() for part in text.split(",")]
    if not all(part.isascii() and part.isdigit() for part in ids):
        raise ValueError(f"{text!r} is not a list of GPU indexes: give non-negative integers separated by commas, like 0,2.")
    numbers = [int(part) for part in ids]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"{text!r} names a GPU more than once.")
    return [str(number) for number in numbers]


def visible_gpus(environ: Mapping[str, str] = os.environ) -> tuple[list[str], str]:
    """The GPUs of this machine and where that came from: CUDA_VISIBLE_DEVICES where it is set (empty: none), else
    what nvidia-smi lists, else none. Never imports torch: the supervisor lives as long as serve, and torch would
    cost it 300 MB and seconds to start."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        ids = [part.strip() for part in environ["CUDA_VISIBLE_DEVICES"].split(",") if part.strip()]
        return ids, "from CUDA_VISIBLE_DEVICES" if ids else "CUDA_VISIBLE_DEVICES is empty"
    listed = nvidia_smi_gpus(environ.get("PATH"))
    if listed is None:
        return [], "no CUDA_VISIBLE_DEVICES and no working nvidia-smi"
    return listed, "from nvidia-smi"


def nvidia_smi_gpus(path: str | None) -> list[str] | None:
    """The GPU indexes nvidia-smi lists; None where there is no nvidia-smi on ``path`` or it fails (no driver)."""
    command = shutil.which("nvidia-smi", path=path)
    if command is None:
        return None
    try:
        listed = subprocess.run([command, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("nvidia-smi did not answer (%s); starting no per-GPU worker.", exc)
        return None
    if listed.returncode != 0:
        logger.warning("nvidia-smi failed (exit %d): %s", listed.returncode, listed.stderr.strip() or listed.stdout.strip())
        return None
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


# --- the supervisor ---------------------------------------------------------------------------------------------------


FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
STEADY_AFTER_SECONDS = 60.0  # a start that ran this long resets the back-off and the count of quick exits
GIVE_UP_AFTER = 5  # quick exits in a row
POLL_SECONDS = 0.5


@dataclass
class Child:
    """One supervised process: its current start, the pids its process group has had, and its restart back-off."""

    spec: ProcessSpec
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    quick_exits: int = 0
    group_pids: set[int] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.spec.name

    def start(self, env: dict) -> None:
        # Its own process group: the group outlives a killed leader, so its leftovers can be found and killed.
        self.process = subprocess.Popen(self.spec.argv, env={**env, **self.spec.env}, process_group=0)
        self.started_at, self.restart_at, self.group_pids = time.monotonic(), None, {self.process.pid}
        logger.info("started %s (pid %d)", self.name, self.process.pid)

    def note_group(self, groups: dict[int, set[int]]) -> None:
        if self.process is not None:
            self.group_pids |= groups.get(self.process.pid, set())

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def bury(self) -> set[int]:
        """After the leader exited: kill what is left of its group and return the group's pids that are gone."""
        self.note_group(process_groups())
        _kill_group(self.process.pid)
        return wait_gone(self.group_pids)

    def count_exit(self) -> None:
        ran = time.monotonic() - self.started_at
        self.quick_exits = self.quick_exits + 1 if ran < STEADY_AFTER_SECONDS else 0

    @property
    def crash_looping(self) -> bool:
        return self.quick_exits >= GIVE_UP_AFTER

    def schedule_restart(self, code: int) -> None:
        delay = min(FIRST_BACKOFF_SECONDS * 2 ** max(0, self.quick_exits - 1), MAX_BACKOFF_SECONDS)
        self.restart_at = time.monotonic() + delay
        logger.warning("%s (pid %d) exited after %.0f s; restarting %s in %gs (exit %s)",
                       self.name, self.process.pid, time.monotonic() - self.started_at, self.name, delay, describe_exit(code))
        self.process = None


def supervise(
    specs: list[ProcessSpec],
    on_started: Callable[[], None] = lambda: None,
    on_exit: Callable[[str, set[int]], None] = lambda name, pids: None,
) -> int:
    """Run every process, restarting one that exits, until SIGINT / SIGTERM (returns 0) or until one crash-loops
    (returns its exit code). ``on_exit(name, pids)`` is called with the pids of an exited process's group, all dead."""
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "PYTHONUNBUFFERED": "1"}
    children = [Child(spec) for spec in specs]
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        child.start(env)
    on_started()
    exit_code = 0
    while not stopping:
        groups = process_groups()
        for child in children:
            if child.process is None:
                if time.monotonic() >= child.restart_at:
                    child.start(env)
                continue
            child.note_group(groups)
            code = child.exited()
            if code is None:
                continue
            child.count_exit()
            if child.crash_looping:
                logger.error("%s exited (exit %s) %d times in a row, each within %.0f s of its start; stopping Prefloop.",
                             child.name, describe_exit(code), GIVE_UP_AFTER, STEADY_AFTER_SECONDS)
                exit_code, stopping = code or 1, True
            dead = child.bury()
            try:
                on_exit(child.name, dead)
            except Exception:  # noqa: BLE001 - the supervisor must outlive a failing hook (a database that is down)
                logger.exception("after %s exited", child.name)
            if not stopping:
                child.schedule_restart(code)
        if not stopping:
            time.sleep(POLL_SECONDS)
    _terminate([child.process for child in children if child.process is not None])
    return exit_code


def describe_exit(code: int) -> str:
    """-9 -> '-9, SIGKILL'; 1 -> '1'."""
    if code < 0:
        try:
            return f"{code}, {signal.Signals(-code).name}"
        except ValueError:
            pass
    return str(code)


def process_groups() -> dict[int, set[int]]:
    """Process group id -> pids, read from /proc (empty where there is none: then only the leader is known)."""
    groups: dict[int, set[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state_and_more = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it exited while we read
        groups.setdefault(int(state_and_more[2]), set()).add(int(stat.parent.name))
    return groups


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")  # a zombie has stopped running; its parent has not collected it yet


def wait_gone(pids: set[int], timeout: float = 5.0) -> set[int]:
    """The pids among ``pids`` that are gone (or zombies) within ``timeout``; a pid still alive then is left out."""
    if not Path("/proc/self/stat").exists():
        return set()  # no way to tell here
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return {pid for pid in pids if not _alive(pid)}


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing is left of it


def _terminate(processes, grace_seconds: float = 15.0) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace_seconds
    for proc in processes:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _kill_group(proc.pid)  # what its children left behind
