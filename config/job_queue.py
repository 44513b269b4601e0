"""Reads over jobs of every kind: progress and ETA, a queued job's place in its queue, and the Jobs page's list."""

from __future__ import annotations

import heapq
import statistics
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from config.jobs import Job, job_kinds, waits_for_broker

TYPICAL_OF_LAST = 10  # a kind's typical run time: the median of its last this many succeeded jobs
# No ETA before there is enough to go on: this share of the work done, and this much working time.
ETA_AFTER_FRACTION = 0.02
ETA_AFTER_SECONDS = 5.0


@dataclass(frozen=True)
class JobProgress:
    done: int
    total: int
    percent: int
    elapsed_seconds: float
    per_second: float | None  # units of work (prompts, steps, rows) per second, model loading left out
    eta_seconds: float | None

    def as_dict(self) -> dict:
        return {
            "done": self.done,
            "total": self.total,
            "percent": self.percent,
            "elapsed_seconds": round(self.elapsed_seconds, 1),
            "per_second": None if self.per_second is None else round(self.per_second, 3),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds),
        }


def job_progress(job: Job) -> JobProgress:
    """Counts, rate and ETA. The rate is the work done (with the finished share of the unit in progress, where the
    kind records it) over the whole working time (model loading left out): an average that settles as the job runs,
    stateless, and that moves between two counter steps instead of falling until the next one (the ETA used to swing
    by 2x between whole batches). The ETA waits for ETA_AFTER_FRACTION of the work and ETA_AFTER_SECONDS of work."""
    done, total = job.counts
    exact = job.done_exact
    elapsed = _elapsed(job)
    percent = 100 if job.status == Job.Status.SUCCEEDED else (int(100 * exact / total) if total else 0)
    working = working_seconds(job)
    rate = exact / working if exact > 0 and working > 0 else None
    enough = total and exact >= ETA_AFTER_FRACTION * total and working >= ETA_AFTER_SECONDS
    eta = (total - exact) / rate if rate and enough and job.status == Job.Status.RUNNING else None
    return JobProgress(done=done, total=total, percent=percent, elapsed_seconds=elapsed, per_second=rate, eta_seconds=eta)


def _elapsed(job: Job) -> float:
    if not job.started_at:
        return 0.0
    return ((job.finished_at or timezone.now()) - job.started_at).total_seconds()


def working_seconds(job: Job) -> float:
    """Seconds since the job started, less the time it spent loading models."""
    return max(0.0, _elapsed(job) - job.load_seconds)


# --- the queue -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueuePlace:
    position: int  # 1: the next to start
    ahead: list[Job]  # what it waits for: the running jobs of its queue, then the queued ones before it
    wait_seconds: float | None  # an estimate; None when a job ahead has no estimate
    queue: str
    waiting_for_broker: bool = False  # launched while the broker was unreachable: not yet handed to the workers

    @property
    def sentence(self) -> str:
        """"2nd in line, behind training run 14, about 12 min left"."""
        if self.waiting_for_broker:
            return (f"not yet handed to the {self.queue} queue: the broker could not be reached when it was launched; "
                    f"it is sent automatically as soon as the broker answers (tried every {_duration(settings.JOB_REAPER_SECONDS)})")
        text = f"{_ordinal(self.position)} in line on the {self.queue} queue"
        if self.ahead:
            text += f", behind {self.ahead[-1]}"
            running = [job for job in self.ahead if job.status == Job.Status.RUNNING and job is not self.ahead[-1]]
            if running:
                text += f" (now running: {', '.join(str(job) for job in running)})"
        if self.wait_seconds is not None and self.ahead:
            text += f", about {_duration(self.wait_seconds)} left"
        elif self.ahead:
            text += ", wait unknown (no finished job of that kind to estimate from)"
        else:
            text += ", starting as soon as a worker takes it"
        return text

    def as_dict(self) -> dict:
        return {
            "position": self.position,
            "queue": self.queue,
            "waiting_for": [{"kind": job.job_kind, "id": job.pk, "status": job.status} for job in self.ahead],
            "wait_seconds": None if self.wait_seconds is None else round(self.wait_seconds),
            "waiting_for_broker": self.waiting_for_broker,
            "text": self.sentence,
        }


class JobQueues:
    """The queues as they stand now, read once however many jobs are placed in them (a list places every row). Each
    worker takes one job at a time, oldest first; a queue may have several (one gpu worker per GPU). While a job
    waits, every worker of its queue is busy, so the jobs running on the queue tell how many workers it has."""

    def __init__(self):
        self._active: list[Job] | None = None
        self._typical: dict[type[Job], float | None] = {}

    def place(self, job: Job) -> QueuePlace | None:
        """Where a queued job stands in its queue; None unless it is queued."""
        if job.status != Job.Status.QUEUED:
            return None
        same_queue = [other for other in self._active_jobs() if other.queue == job.queue]
        running = [other for other in same_queue if other.status == Job.Status.RUNNING]
        queued = [other for other in same_queue if other.status == Job.Status.QUEUED and _order_key(other) < _order_key(job)]
        ahead = running + queued
        return QueuePlace(
            position=len(queued) + 1, ahead=ahead, wait_seconds=self._wait(ahead), queue=job.queue,
            waiting_for_broker=waits_for_broker(job),
        )

    def _active_jobs(self) -> list[Job]:
        """Every queued or running job of every kind, oldest first."""
        if self._active is None:
            active = (Job.Status.QUEUED, Job.Status.RUNNING)
            self._active = sorted((job for model in job_kinds() for job in model.objects.filter(status__in=active)), key=_order_key)
        return self._active

    def _wait(self, ahead: list[Job]) -> float | None:
        """When a worker is free for the job: each running job's time left occupies a worker, and each queued job
        ahead takes the worker that frees first for its kind's typical time."""
        free_at: list[float] = []  # one entry per busy worker: when it is free
        for job in ahead:
            typical = self._typical_seconds(type(job))
            if job.status == Job.Status.RUNNING:
                left = job_progress(job).eta_seconds
                if left is None and typical is not None:
                    left = max(0.0, typical - _elapsed(job))
                if left is None:
                    return None
                heapq.heappush(free_at, left)
            else:
                if typical is None:
                    return None
                heapq.heappush(free_at, (heapq.heappop(free_at) if free_at else 0.0) + typical)
        return free_at[0] if free_at else 0.0

    def _typical_seconds(self, model: type[Job]) -> float | None:
        """The median run time of the kind's last succeeded jobs."""
        if model not in self._typical:
            rows = (
                model.objects.filter(status=Job.Status.SUCCEEDED, started_at__isnull=False, finished_at__isnull=False)
                .order_by("-finished_at")
                .values_list("started_at", "finished_at")[:TYPICAL_OF_LAST]
            )
            durations = [(finished - started).total_seconds() for started, finished in rows]
            self._typical[model] = statistics.median(durations) if durations else None
        return self._typical[model]


def queue_place(job: Job) -> QueuePlace | None:
    """Where one queued job stands in its queue; None unless it is queued."""
    return JobQueues().place(job)


def _order_key(job: Job) -> tuple[datetime, str, int]:
    return job.created_at, job.job_kind, job.pk


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


# --- the Jobs page ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobFilter:
    kind: str = ""
    status: str = ""
    project: str = ""  # a project slug


def jobs_list(selection: JobFilter, limit: int = 100) -> list[Job]:
    """The newest jobs of every kind (or one), newest first."""
    found: list[Job] = []
    for model in job_kinds():
        if selection.kind and model.job_kind != selection.kind:
            continue
        rows = model.objects.select_related("requested_by").order_by("-created_at", "-pk")
        rows = rows.select_related(*model.list_select_related).prefetch_related(*model.list_prefetch_related)
        if selection.status:
            rows = rows.filter(status=selection.status)
        if selection.project:
            rows = rows.filter(**{f"{model.project_lookup}__slug": selection.project}).distinct()
        found.extend(rows[:limit])
    found.sort(key=lambda job: (job.created_at, job.job_kind, job.pk), reverse=True)
    return found[:limit]
