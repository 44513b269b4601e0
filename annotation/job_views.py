"""The Jobs page: every background job of every kind, newest first (admins; researchers read)."""

from dataclasses import dataclass

from django import forms
from django.shortcuts import render
from django.urls import reverse

from annotation.models import Project
from annotation.roles import EXPLORE, require
from config.job_queue import JobFilter, JobProgress, QueuePlace, job_progress, jobs_list, queue_place
from config.jobs import Job, job_kinds


class JobFilterForm(forms.Form):
    kind = forms.ChoiceField(required=False)
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *Job.Status.choices])
    project = forms.ChoiceField(required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [("", "Every kind"), *((model.job_kind, model.kind_label) for model in job_kinds())]
        self.fields["project"].choices = [("", "Every project"), *Project.objects.order_by("name").values_list("slug", "name")]

    def selection(self) -> JobFilter:
        """The filter; an invalid field (an unknown kind in a hand-written URL) filters on nothing."""
        if not self.is_bound or not (self.is_valid() or self.cleaned_data):
            return JobFilter()
        return JobFilter(**{name: self.cleaned_data.get(name, "") for name in ("kind", "status", "project")})


@dataclass(frozen=True)
class JobRow:
    job: Job
    url: str
    progress: JobProgress
    place: QueuePlace | None


def job_rows(selection: JobFilter) -> list[JobRow]:
    return [
        JobRow(job=job, url=reverse(job.detail_url_name, args=[job.pk]), progress=job_progress(job), place=queue_place(job))
        for job in jobs_list(selection)
    ]


@require(EXPLORE)
def job_list(request):
    form = JobFilterForm(request.GET or None)
    rows = job_rows(form.selection())
    context = {"form": form, "rows": rows, "active": any(row.job.is_active for row in rows)}
    return render(request, "_jobs_table.html" if request.htmx else "jobs.html", context)
