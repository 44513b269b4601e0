"""The Jobs page: every background job of every kind, newest first (admins; researchers read)."""

from dataclasses import dataclass

from django.shortcuts import render
from django.urls import reverse

from annotation.forms import JobFilterForm
from annotation.roles import EXPLORE, require
from config.job_queue import JobFilter, JobProgress, JobQueues, QueuePlace, job_progress, jobs_list
from config.jobs import Job


@dataclass(frozen=True)
class JobRow:
    job: Job
    url: str
    progress: JobProgress
    place: QueuePlace | None


def job_rows(selection: JobFilter) -> list[JobRow]:
    queues = JobQueues()
    return [
        JobRow(job=job, url=reverse(job.detail_url_name, args=[job.pk]), progress=job_progress(job), place=queues.place(job))
        for job in jobs_list(selection)
    ]


@require(EXPLORE)
def job_list(request):
    form = JobFilterForm(request.GET or None)
    rows = job_rows(form.selection())
    context = {"form": form, "rows": rows, "active": any(row.job.is_active for row in rows)}
    return render(request, "_jobs_table.html" if request.htmx else "jobs.html", context)
