from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from annotation.models import Project
from annotation.roles import EXPLORE, MANAGE, require
from config import jobs as lifecycle
from config.web import add_validation_errors, validation_message
from generation import jobs, selectors, services
from generation.forms import GenerationJobForm, ModelVersionForm
from generation.models import GenerationJob, ModelVersion


@require(EXPLORE)
def model_list(request):
    versions = ModelVersion.objects.select_related("parent").order_by("-created_at")
    return render(request, "model_list.html", {"versions": versions})


@require(MANAGE)
def model_register(request):
    form = ModelVersionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            version = services.model_version_register(created_by=request.user, **form.cleaned_data)
        except ValidationError as exc:
            add_validation_errors(form, exc)
        else:
            messages.success(request, f"Model {version.name} registered.")
            return redirect("model_list")
    return render(request, "model_form.html", {"form": form}, status=422 if form.errors else 200)


@require(MANAGE)
def job_create(request, slug):
    project = get_object_or_404(Project, slug=slug)
    versions = ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY).order_by("created_at")
    form = GenerationJobForm(request.POST or None, versions=versions, k=project.responses_per_item)
    if request.method == "POST" and form.is_valid():
        try:
            job = jobs.generation_job_create(
                project=project,
                plan=[jobs.PlanEntry(version, n) for version, n in form.plan()],
                prompt_selection=form.selection(),
                sampling=form.sampling(),
                backend=form.cleaned_data["backend"],
                requested_by=request.user,
            )
        except ValidationError as exc:
            add_validation_errors(form, exc)
        else:
            return redirect("job_detail", job_id=job.pk)
    return render(request, "job_form.html", {"project": project, "form": form}, status=422 if form.errors else 200)


@require(EXPLORE)
def job_list(request):
    return render(request, "job_list.html", {"jobs": [(job, selectors.job_progress(job)) for job in selectors.jobs_with_plan()[:100]]})


@require(EXPLORE)
def job_detail(request, job_id):
    job = get_object_or_404(selectors.jobs_with_plan(), pk=job_id)
    context = {"job": job, "progress": selectors.job_progress(job)}
    return render(request, "_job_progress.html" if request.htmx else "job_detail.html", context)


@require(MANAGE)
@require_POST
def job_cancel(request, job_id):
    job = get_object_or_404(GenerationJob, pk=job_id)
    try:
        lifecycle.job_cancel(job=job)
    except ValidationError as exc:
        messages.error(request, validation_message(exc))
    return redirect("job_detail", job_id=job.pk)
