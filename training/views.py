from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from annotation.models import Project
from annotation.roles import EXPLORE, MANAGE, can_manage, require
from config.jobs import job_cancel
from config.web import add_validation_errors, validation_message
from generation.models import ModelVersion
from training import charts, scoring, selectors, services
from training.forms import QueueOrderForm, ScoringJobForm, TrainingRunForm
from training.models import ScoringJob, TrainingRun

MAX_COMPARED = 8


@require(EXPLORE)
def run_list(request):
    runs = list(selectors.runs_with_versions()[:200])
    return render(request, "run_list.html", {"rows": [(run, selectors.run_progress(run), selectors.run_headline(run)) for run in runs]})


@require(MANAGE)
def run_create(request):
    project = Project.objects.filter(slug=request.GET.get("project", "")).first()
    initial = {"projects": [project] if project else [], "base_version": selectors.default_base(project)}
    form = TrainingRunForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            run = services.training_run_create(
                kind=form.cleaned_data["kind"],
                base_version=form.cleaned_data["base_version"],
                projects=list(form.cleaned_data["projects"]),
                pair_filter=form.selection(),
                settings=form.settings(),
                reward_version=form.chosen_reward_version(),
                requested_by=request.user,
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            return redirect("run_detail", run_id=run.pk)
    context = {
        "form": form, "pair_filter_fields": TrainingRunForm.FILTER_FIELDS,
        "demonstration_filter_fields": TrainingRunForm.DEMONSTRATION_FIELDS, "prompt_fields": TrainingRunForm.PROMPT_FIELDS,
        **_check_context(form, measure=False),
    }
    return render(request, "run_form.html", context, status=422 if form.errors else 200)


@require(MANAGE)
@require_POST
def run_check(request):
    """The launch form's pair check (htmx): the base's lineage and how many selected pairs (an SFT run's
    demonstrations) fit the max length."""
    return render(request, "_run_check.html", _check_context(TrainingRunForm(request.POST), measure=True))


def _check_context(form: TrainingRunForm, *, measure: bool) -> dict:
    base = form.cleaned_data.get("base_version") if form.is_bound and form.is_valid() else None
    if base is None and not form.is_bound:
        base = form.initial.get("base_version")
    if base is None and form.is_bound:
        base = ModelVersion.objects.filter(name=form.data.get("base_version", ""), kind=ModelVersion.Kind.POLICY).first()
    context = {"lineage": selectors.lineage(base), "check": None, "check_error": "", "oob": measure}
    if measure:
        if not form.is_valid():
            unit = f"{services.UNIT.get(form.data.get('kind'), 'pair')}s"
            if not form.data.getlist("projects"):
                context["check_error"] = f"Choose a project to count its {unit}."
            else:
                context["check_error"] = f"Fix these to count the {unit}: " + "; ".join(
                    f"{form.fields[name].label or name if name in form.fields else 'form'}: {' '.join(errors)}"
                    for name, errors in form.errors.items()
                )
            return context
        try:
            context["check"] = services.training_run_check(
                kind=form.cleaned_data["kind"], base_version=form.cleaned_data["base_version"],
                projects=list(form.cleaned_data["projects"]), pair_filter=form.selection(), settings=form.settings(),
                reward_version=form.chosen_reward_version(),
            ).as_dict()
        except ValidationError as exc:
            context["check_error"] = validation_message(exc)
    return context


@require(EXPLORE)
def run_detail(request, run_id):
    run = get_object_or_404(selectors.runs_with_versions(), pk=run_id)
    series = selectors.run_series([run])
    context = {
        "run": run,
        "progress": selectors.run_progress(run),
        "headline": selectors.run_headline(run),
        "charts": charts.run_charts(selectors.CHARTS[run.kind], series, {run.pk: ""}),
        # Online runs: what the policy writes and what the reward model gives it (admins only), and warnings.
        "samples": selectors.latest_samples(run) if run.is_online and can_manage(request.user) else [],
        "hacking_signs": selectors.reward_hacking_signs(run, series),
        "settings_rows": selectors.settings_display(run.config),
        "filter_rows": selectors.settings_display(run.pair_filter),
    }
    return render(request, "_run_progress.html" if request.htmx else "run_detail.html", context)


@require(MANAGE)
@require_POST
def run_cancel(request, run_id):
    try:
        job_cancel(job=get_object_or_404(TrainingRun, pk=run_id))
    except ValidationError as exc:
        messages.error(request, validation_message(exc))
    return redirect("run_detail", run_id=run_id)


@require(EXPLORE)
def run_compare(request):
    ids = [int(value) for value in request.GET.getlist("runs") if value.isdigit()][:MAX_COMPARED]
    runs = list(selectors.runs_with_versions().filter(pk__in=ids).order_by("pk"))
    names = sorted({name for run in runs for name in selectors.CHARTS[run.kind]}, key=_chart_order)
    context = {
        "runs": [(run, selectors.run_headline(run)) for run in runs],
        "charts": charts.run_charts(names, selectors.run_series(runs), {run.pk: f"run {run.pk}" for run in runs}),
        "setting_rows": selectors.settings_table(runs),
    }
    return render(request, "run_compare.html", context)


def _chart_order(name: str) -> int:
    order = list(dict.fromkeys(name for names in selectors.CHARTS.values() for name in names))
    return order.index(name)


@require(MANAGE)
def reward_overview(request, slug):
    project = get_object_or_404(Project, slug=slug)
    return render(request, "reward_overview.html", _reward_context(project))


def _reward_context(project, **forms):
    return {
        "project": project,
        "score_form": forms.get("score_form") or ScoringJobForm(),
        "order_form": forms.get("order_form") or QueueOrderForm(
            initial={"queue_order": project.queue_order, "reward_version": project.queue_reward_version}
        ),
        "reward_models": selectors.reward_models_for(project),
        "jobs": ScoringJob.objects.filter(project=project).select_related("reward_version")[:20],
    }


@require(MANAGE)
@require_POST
def scoring_create(request, slug):
    project = get_object_or_404(Project, slug=slug)
    form = ScoringJobForm(request.POST)
    if form.is_valid():
        try:
            job = scoring.scoring_job_create(project=project, reward_version=form.cleaned_data["reward_version"], requested_by=request.user)
        except ValidationError as exc:
            add_validation_errors(form, exc)
        else:
            return redirect("scoring_detail", job_id=job.pk)
    return render(request, "reward_overview.html", _reward_context(project, score_form=form), status=422)


@require(MANAGE)
@require_POST
def queue_order_set(request, slug):
    project = get_object_or_404(Project, slug=slug)
    form = QueueOrderForm(request.POST)
    if form.is_valid():
        try:
            scoring.project_queue_order_set(
                project=project, order=form.cleaned_data["queue_order"], reward_version=form.cleaned_data["reward_version"]
            )
        except ValidationError as exc:
            add_validation_errors(form, exc)
        else:
            messages.success(request, f"The queue is now ordered: {project.get_queue_order_display().lower()}.")
            return redirect("reward_overview", slug=project.slug)
    return render(request, "reward_overview.html", _reward_context(project, order_form=form), status=422)


@require(MANAGE)
def scoring_detail(request, job_id):
    job = get_object_or_404(ScoringJob.objects.select_related("project", "reward_version"), pk=job_id)
    context = {"job": job, "accuracy": selectors.reward_accuracy(job.reward_version, job.project)}
    return render(request, "_scoring_progress.html" if request.htmx else "scoring_detail.html", context)


@require(MANAGE)
@require_POST
def scoring_cancel(request, job_id):
    try:
        job_cancel(job=get_object_or_404(ScoringJob, pk=job_id))
    except ValidationError as exc:
        messages.error(request, validation_message(exc))
    return redirect("scoring_detail", job_id=job_id)
