"""Export pages: researchers and admins request a dataset, follow a large one, download it with its card."""

from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render

from annotation import exports
from annotation.forms import ExportForm, SFTExportForm
from annotation.models import Export, Project
from config.artifacts import ArtifactNotFound
from annotation.roles import EXPLORE, require
from config.web import add_validation_errors


@require(EXPLORE)
def export_create(request, slug):
    project = get_object_or_404(Project, slug=slug)
    form = ExportForm(request.POST or None, initial={"projects": [project]})
    if request.method == "POST" and form.is_valid():
        try:
            export = exports.export_create(
                projects=list(form.cleaned_data["projects"]),
                export_format=form.cleaned_data["export_format"],
                pair_filter=form.pair_filter(),
                requested_by=request.user,
            )
        except ValidationError as exc:
            add_validation_errors(form, exc)
        else:
            return redirect("export_detail", export_id=export.pk)
    return _export_form_page(request, project, form, Export.Dataset.PREFERENCE)


@require(EXPLORE)
def sft_export_create(request, slug):
    """Demonstrations as an SFT dataset; a link may prefill the filter (?sources=rejection_sampling&rejection_jobs=3)."""
    project = get_object_or_404(Project, slug=slug)
    initial = {"projects": [project]}
    if request.method == "GET":
        initial |= {key: request.GET.getlist(key) for key in ("sources", "statuses") if key in request.GET}
        initial |= {"rejection_jobs": request.GET["rejection_jobs"]} if "rejection_jobs" in request.GET else {}
    form = SFTExportForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            export = exports.export_create(
                projects=list(form.cleaned_data["projects"]),
                export_format=form.cleaned_data["export_format"],
                dataset=Export.Dataset.SFT,
                pair_filter=form.demonstration_filter(),
                requested_by=request.user,
            )
        except ValidationError as exc:
            add_validation_errors(form, exc)
        else:
            return redirect("export_detail", export_id=export.pk)
    return _export_form_page(request, project, form, Export.Dataset.SFT)


def _export_form_page(request, project, form, dataset: str):
    context = {
        "project": project, "form": form, "dataset": dataset, "recent": Export.objects.prefetch_related("projects")[:20],
    }
    return render(request, "export_form.html", context, status=422 if form.errors else 200)


@require(EXPLORE)
def export_detail(request, export_id):
    export = get_object_or_404(Export.objects.prefetch_related("projects"), pk=export_id)
    return render(request, "_export_progress.html" if request.htmx else "export_detail.html", {"export": export})


@require(EXPLORE)
def export_download(request, export_id, part):
    export = get_object_or_404(Export, pk=export_id, status=Export.Status.SUCCEEDED)
    try:
        stream, name = exports.export_file(export, part)
    except ArtifactNotFound:
        raise Http404("The export's file is gone from the artifact store.") from None
    return FileResponse(stream, as_attachment=True, filename=name)
