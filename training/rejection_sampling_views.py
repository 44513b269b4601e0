"""Pages of rejection sampling: a project's jobs, the launch form, a job's page (progress while it runs, then its
score distribution, what it selected and the reward matrix), cancel, and the one-step SFT run on its selection.
Researchers and admins read them; admins launch, cancel and train. Labelers never reach them (model names live
here)."""

from django import forms
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
from generation.forms import SamplingForm, prompt_ids_from
from generation.models import ModelVersion
from training import charts, selectors
from training import rejection_sampling as service
from training.forms import _preselect_the_only_reward_model
from training.models import RejectionSamplingJob, TrainingRun

PROMPTS_PER_PAGE = 10


class RejectionSamplingForm(SamplingForm):
    """Which policy answers which prompts N times, which reward model judges, and what is kept."""

    policy = forms.ModelChoiceField(
        queryset=ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY).order_by("-created_at"), to_field_name="name",
        help_text="The policy that generates (and that an SFT run on the selection fine-tunes).",
    )
    judge = forms.ModelChoiceField(
        queryset=ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD).order_by("-created_at"), to_field_name="name",
        help_text="The reward model that scores every response.",
    )
    n = forms.IntegerField(
        label="N", initial=8, min_value=service.MIN_N, max_value=service.MAX_N, help_text="Responses per prompt.",
    )
    selection = forms.ChoiceField(
        choices=RejectionSamplingJob.Selection.choices, initial=RejectionSamplingJob.Selection.BEST_OF_N, widget=forms.RadioSelect,
    )
    k = forms.IntegerField(
        label="K", initial=1, min_value=1, help_text="Top K per prompt: at most N; top K over all prompts: any number. Best of N keeps 1.",
    )
    prompts = forms.ChoiceField(
        choices=[("train", "The project's train split"), ("ids", "These prompt ids")], initial="train", widget=forms.RadioSelect,
    )
    prompt_ids = forms.CharField(required=False, help_text="Comma-separated, for “These prompt ids”.")
    make_pairs = forms.BooleanField(
        required=False, label="Also make judge pairs",
        help_text="Each prompt's best response over its worst becomes a preference pair marked as the reward model's "
        "(source judge): never trained on or exported unless a pair filter names that source.",
    )

    field_order = ["policy", "judge", "n", "selection", "k", "prompts", "prompt_ids", "make_pairs"]

    def __init__(self, *args, project: Project | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        _preselect_the_only_reward_model(self, "judge")
        if self.initial.get("policy") is None:
            self.initial["policy"] = selectors.default_base(project)

    def clean_prompt_ids(self):
        return prompt_ids_from(self.cleaned_data.get("prompt_ids", ""))

    def clean(self):
        data = super().clean()
        if data.get("selection") == RejectionSamplingJob.Selection.BEST_OF_N:
            data["k"] = 1  # the field is ignored for best of N
        return data

    def selection_dict(self) -> dict:
        mode = self.cleaned_data["prompts"]
        return {"mode": mode, "ids": self.cleaned_data["prompt_ids"]} if mode == "ids" else {"mode": mode}


class TrainForm(forms.Form):
    eval_fraction = forms.FloatField(
        required=False, min_value=0, max_value=0.9, label="Held out",
        help_text="Share of the prompts held out for evaluation (empty: 0.1; 0: train on everything).",
        widget=forms.NumberInput(attrs={"step": "0.05", "placeholder": "0.1"}),
    )


@require(EXPLORE)
def rejection_sampling_list(request, slug):
    project = get_object_or_404(Project, slug=slug)
    jobs = project.rejection_sampling_jobs.select_related("policy", "judge")[:200]
    return render(request, "rejection_sampling_list.html", {"project": project, "jobs": jobs})


@require(MANAGE)
def rejection_sampling_create(request, slug):
    project = get_object_or_404(Project, slug=slug)
    form = RejectionSamplingForm(request.POST or None, project=project)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            job = service.rejection_sampling_create(
                project=project, policy=data["policy"], judge=data["judge"], n=data["n"], selection=data["selection"],
                k=data["k"], sampling=form.sampling(), prompt_selection=form.selection_dict(), backend=data["backend"],
                make_pairs=data["make_pairs"], requested_by=request.user,
            )
        except ValidationError as exc:
            add_validation_errors(form, exc)
        else:
            return redirect("rejection_sampling_detail", job_id=job.pk)
    return render(request, "rejection_sampling_form.html", {"project": project, "form": form}, status=422 if form.errors else 200)


@require(EXPLORE)
def rejection_sampling_detail(request, job_id):
    job = get_object_or_404(RejectionSamplingJob.objects.select_related("project", "policy", "judge", "requested_by"), pk=job_id)
    context = {"job": job, "progress": job_progress(job)}
    if request.htmx:  # the progress panel polling: once the job ends, the whole page shows its results
        return render(request, "_rejection_sampling_progress.html", context) if job.is_active else HttpResponseClientRefresh()
    return render(request, "rejection_sampling_detail.html", {**context, **_results_context(request, job)})


def _results_context(request, job: RejectionSamplingJob) -> dict:
    only_selected = request.GET.get("only") == "selected"
    prompt_ids = service.matrix_prompt_ids(job)
    if only_selected:
        prompt_ids = prompt_ids.filter(selected=True)
    page = Paginator(prompt_ids, PROMPTS_PER_PAGE).get_page(request.GET.get("page"))
    rows = service.matrix_rows(job, page.object_list, best_first=True)
    if only_selected:
        for row in rows:
            row["samples"] = [sample for sample in row["samples"] if sample.selected]
    results = job.results or None
    return {
        "results": results,
        "histogram": charts.build_histogram("Judge scores", results["scores"]["histogram"]) if results else None,
        "page": page,
        "rows": rows,
        "only_selected": only_selected,
        "sft_runs": _sft_runs(job),
        "train_form": TrainForm(),
    }


def _sft_runs(job: RejectionSamplingJob) -> list[TrainingRun]:
    """The SFT runs trained on this job's selection."""
    runs = TrainingRun.objects.filter(kind=TrainingRun.Kind.SFT, projects=job.project).order_by("-created_at")
    return [run for run in runs[:500] if job.pk in (run.pair_filter.get("rejection_jobs") or [])]


@require(MANAGE)
@require_POST
def rejection_sampling_cancel(request, job_id):
    try:
        job_cancel(job=get_object_or_404(RejectionSamplingJob, pk=job_id))
    except ValidationError as exc:
        messages.error(request, validation_message(exc))
    return redirect("rejection_sampling_detail", job_id=job_id)


@require(MANAGE)
@require_POST
def rejection_sampling_train(request, job_id):
    """The one-step SFT run: the job's policy fine-tuned on its selection, with the default settings."""
    job = get_object_or_404(RejectionSamplingJob.objects.select_related("project", "policy"), pk=job_id)
    form = TrainForm(request.POST)
    if not form.is_valid():
        messages.error(request, "No SFT run was launched: " + " ".join(" ".join(errors) for errors in form.errors.values()))
        return redirect("rejection_sampling_detail", job_id=job_id)
    try:
        run = service.rejection_sampling_train(job=job, eval_fraction=form.cleaned_data["eval_fraction"], requested_by=request.user)
    except ValidationError as exc:
        messages.error(request, f"No SFT run was launched: {validation_message(exc)}")
        return redirect("rejection_sampling_detail", job_id=job_id)
    return redirect("run_detail", run_id=run.pk)
