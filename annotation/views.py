"""HTML views: validate input, call one service or selector, render. htmx requests get the fragment."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from annotation import imports, selectors, services
from annotation.forms import DemonstrationModeForm, ProjectForm, PromptFilterForm, PromptImportForm
from annotation.importing import ImportFileError
from annotation.models import ImportJob, Project
from config.job_queue import job_progress
from config.jobs import job_cancel
from annotation.roles import ANY_ROLE, EXPLORE, MANAGE, require
from config.limits import accepts_uploads
from config.web import add_validation_errors, validation_message

PROMPTS_PER_PAGE = 50


@require(*ANY_ROLE)
def home(request):
    return render(request, "home.html", {"projects": selectors.projects_with_counts()})


@require(MANAGE)
def project_create(request):
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = services.project_create(created_by=request.user, **form.cleaned_data)
        except ValidationError as exc:
            add_validation_errors(form, exc)
        else:
            messages.success(request, f"Project {project.name} created. Import prompts to get started.")
            return redirect("project_detail", slug=project.slug)
    return render(request, "project_form.html", {"form": form}, status=422 if form.errors else 200)


@require(*ANY_ROLE)
def project_detail(request, slug):
    project = get_object_or_404(Project, slug=slug)
    context = {
        "project": project, "import_form": PromptImportForm(),
        "demonstration_form": DemonstrationModeForm(initial={"demonstration_mode": project.demonstration_mode}),
    }
    if request.user.has_perm(EXPLORE):
        context["stats"] = selectors.project_stats(project)
    return render(request, "project_detail.html", context)


@require_POST
@require(MANAGE)
def demonstration_mode_set(request, slug):
    project = get_object_or_404(Project, slug=slug)
    form = DemonstrationModeForm(request.POST)
    if form.is_valid():
        services.project_demonstration_mode_set(project=project, mode=form.cleaned_data["demonstration_mode"])
        messages.success(request, f"Demonstrations: {project.get_demonstration_mode_display().lower()}.")
    else:
        messages.error(request, "Choose one of the demonstration modes.")
    return redirect("project_detail", slug=project.slug)


@accepts_uploads
@require(MANAGE)
def prompts_import(request, slug):
    """Upload a prompt or preference file. A broken file is rejected whole (422) with the line number; a large one is
    imported by a background job, whose progress replaces the form's result."""
    project = get_object_or_404(Project, slug=slug)
    form = PromptImportForm(request.POST or None, request.FILES or None)
    context = {"project": project, "import_form": form}
    status = 200
    if request.method == "POST":
        context["report"], context["import_job"], context["import_error"] = _import_upload(request, project, form)
        status = 422 if context["import_error"] else 200
        if context["import_job"]:
            context["progress"] = job_progress(context["import_job"])
    template = "_import_result.html" if request.htmx else "prompt_import.html"
    return render(request, template, context, status=status)


def _import_upload(request, project, form):
    """(report, background job, error): one of them."""
    if not form.is_valid():
        return None, None, "; ".join(error for errors in form.errors.values() for error in errors)
    upload = form.cleaned_data["file"]
    fraction = form.cleaned_data["heldout_fraction"] or 0.0
    try:
        if imports.import_in_background(upload.size):
            job = imports.import_job_create(project=project, upload=upload, heldout_fraction=fraction, requested_by=request.user)
            return None, job, None
        report = services.prompts_import_file(project=project, stream=upload, filename=upload.name, heldout_fraction=fraction)
    except ImportFileError as exc:
        return None, None, f"Nothing was imported. {upload.name}, {exc}"
    except ValidationError as exc:
        return None, None, validation_message(exc)
    return report, None, None


@require(EXPLORE)
def import_detail(request, import_id):
    job = get_object_or_404(ImportJob.objects.select_related("project", "requested_by"), pk=import_id)
    context = {"import_job": job, "project": job.project, "report": imports.import_report(job), "progress": job_progress(job)}
    return render(request, "_import_progress.html" if request.htmx else "import_detail.html", context)


@require(MANAGE)
def import_cancel(request, import_id):
    job = get_object_or_404(ImportJob, pk=import_id)
    if request.method == "POST":
        try:
            job_cancel(job=job)
        except ValidationError as exc:
            messages.error(request, validation_message(exc))
    return redirect("import_detail", import_id=job.pk)


@require(EXPLORE)
def prompt_list(request, slug):
    project = get_object_or_404(Project, slug=slug)
    filters = PromptFilterForm(request.GET)
    filters.is_valid()
    prompts = selectors.prompts_filtered(project, q=filters.cleaned_data.get("q", ""), split=filters.cleaned_data.get("split", ""))
    page = Paginator(prompts, PROMPTS_PER_PAGE).get_page(request.GET.get("page"))
    context = {"project": project, "filters": filters, "page": page}
    template = "_prompt_rows.html" if request.htmx else "prompt_list.html"
    return render(request, template, context)


@require(EXPLORE)
def prompt_detail(request, slug, prompt_id):
    project = get_object_or_404(Project, slug=slug)
    prompt = get_object_or_404(selectors.prompts_filtered(project), pk=prompt_id)
    candidates = prompt.candidates.select_related("model_version").prefetch_related("scores__reward_version").order_by("id")
    return render(request, "prompt_detail.html", {"project": project, "prompt": prompt, "candidates": candidates})

