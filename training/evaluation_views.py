"""Pages of evaluations and the leaderboard: researchers and admins read them, admins launch, cancel and send blind
comparisons to labelers. Labelers never reach them (model names live here)."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRefresh

from annotation.models import Project
from annotation.roles import EXPLORE, MANAGE, require
from config.job_queue import job_progress
from config.jobs import job_cancel
from config.web import add_validation_errors, validation_message
from training import evaluation as evaluations
from training.forms import EvaluationForm, SendToLabelersForm
from training.models import Evaluation

PROMPTS_PER_PAGE = 10


@require(EXPLORE)
def evaluation_list(request, slug):
    project = get_object_or_404(Project, slug=slug)
    rows = project.evaluations.select_related("judge").prefetch_related("entries__model_version")[:200]
    return render(request, "evaluation_list.html", {"project": project, "evaluations": rows})


@require(MANAGE)
def evaluation_create(request, slug):
    project = get_object_or_404(Project, slug=slug)
    form = EvaluationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            evaluation = evaluations.evaluation_create(
                project=project, versions=list(form.cleaned_data["versions"]),
                judge=form.cleaned_data["judge"], prompt_selection=form.selection(), sampling=form.sampling(),
                samples=form.cleaned_data["samples"], backend=form.cleaned_data["backend"], name=form.cleaned_data["name"],
                requested_by=request.user,
            )
        except ValidationError as exc:
            add_validation_errors(form, exc)
        else:
            return redirect("evaluation_detail", evaluation_id=evaluation.pk)
    return render(request, "evaluation_form.html", {"project": project, "form": form}, status=422 if form.errors else 200)


@require(EXPLORE)
def evaluation_detail(request, evaluation_id):
    evaluation = get_object_or_404(Evaluation.objects.select_related("project", "judge"), pk=evaluation_id)
    context = {"evaluation": evaluation, "progress": job_progress(evaluation)}
    if request.htmx:  # the progress panel polling: once the evaluation ends, the whole page shows its results
        return render(request, "_evaluation_progress.html", context) if evaluation.is_active else HttpResponseClientRefresh()
    return render(request, "evaluation_detail.html", {**context, **_results_context(request, evaluation)})


def _results_context(request, evaluation: Evaluation, send_form: SendToLabelersForm | None = None) -> dict:
    versions = [entry.model_version for entry in evaluation.entries.select_related("model_version")]
    page = Paginator(evaluation.prompts.order_by("position"), PROMPTS_PER_PAGE).get_page(request.GET.get("page"))
    responses = {}
    for response in evaluation.responses.filter(eval_prompt__in=list(page.object_list)).order_by("sample"):
        responses.setdefault((response.eval_prompt_id, response.model_version_id), []).append(response)
    return {
        "versions": versions,
        "page": page,
        "rows": [(prompt, [(version, responses.get((prompt.pk, version.pk), [])) for version in versions]) for prompt in page.object_list],
        "judge": evaluation.results or None,
        "human": evaluations.human_results(evaluation),
        "send_form": send_form or SendToLabelersForm(versions=versions),
    }


@require(MANAGE)
@require_POST
def evaluation_cancel(request, evaluation_id):
    try:
        job_cancel(job=get_object_or_404(Evaluation, pk=evaluation_id))
    except ValidationError as exc:
        messages.error(request, validation_message(exc))
    return redirect("evaluation_detail", evaluation_id=evaluation_id)


@require(MANAGE)
@require_POST
def evaluation_send(request, evaluation_id):
    evaluation = get_object_or_404(Evaluation.objects.select_related("project", "judge"), pk=evaluation_id)
    versions = [entry.model_version for entry in evaluation.entries.select_related("model_version")]
    form = SendToLabelersForm(request.POST, versions=versions)
    if form.is_valid():
        try:
            sent = evaluations.evaluation_send_to_labelers(
                evaluation=evaluation, project=form.cleaned_data["project"], version_a=form.cleaned_data["version_a"],
                version_b=form.cleaned_data["version_b"], limit=form.cleaned_data["limit"],
            )
        except ValidationError as exc:
            add_validation_errors(form, exc)
        else:
            messages.success(request, _sent_message(sent, form.cleaned_data["project"]))
            return redirect("evaluation_detail", evaluation_id=evaluation.pk)
    context = {"evaluation": evaluation, "progress": job_progress(evaluation), **_results_context(request, evaluation, form)}
    return render(request, "evaluation_detail.html", context, status=422)


def _sent_message(sent: evaluations.Sent, project: Project) -> str:
    parts = [f"{sent.sent} blind comparison{'s' if sent.sent != 1 else ''} sent to the labelers of {project.name}"]
    if sent.identical:
        parts.append(f"{sent.identical} left out: both responses were the same text")
    if sent.already:
        parts.append(f"{sent.already} sent before")
    return "; ".join(parts) + "."


@require(EXPLORE)
def leaderboard(request, slug):
    project = get_object_or_404(Project, slug=slug)
    return render(request, "leaderboard.html", {"project": project, "rows": evaluations.leaderboard(project)})


@require(EXPLORE)
def project_rounds(request, slug):
    """The project page's timeline of rounds (loaded into it by htmx)."""
    project = get_object_or_404(Project, slug=slug)
    return render(request, "_rounds.html", {"project": project, "rounds": evaluations.rounds(project)})
