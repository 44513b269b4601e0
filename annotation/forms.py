from django import forms

from annotation import demonstrations
from annotation.models import MAX_K, MAX_RANKINGS_PER_ITEM, MIN_K, MIN_RANKINGS_PER_ITEM, Demonstration, Export, Project
from annotation.pairs import FILTER_NAMES, FILTER_OPTIONS, FilterOption
from config.job_queue import JobFilter
from config.jobs import Job, job_kinds


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(max_length=100, help_text="Used in URLs and on the command line.")
    guidelines = forms.CharField(widget=forms.Textarea(attrs={"rows": 8}), required=False, help_text="Markdown.")
    responses_per_item = forms.IntegerField(
        min_value=MIN_K, max_value=MAX_K, initial=4, label="Responses per prompt (K)"
    )
    rankings_per_item = forms.IntegerField(
        min_value=MIN_RANKINGS_PER_ITEM, max_value=MAX_RANKINGS_PER_ITEM, initial=1, label="Rankings needed per item"
    )
    demonstration_mode = forms.ChoiceField(
        choices=Project.DemonstrationMode.choices, initial=Project.DemonstrationMode.OFF, label="Demonstrations", required=False,
        help_text="Whether labelers also give the answer they want (data for supervised fine-tuning): written from "
        "scratch on a page of their own, or rewritten from the best response right after ranking an item.",
    )

    def clean_demonstration_mode(self) -> str:
        return self.cleaned_data["demonstration_mode"] or Project.DemonstrationMode.OFF


class DemonstrationModeForm(forms.Form):
    demonstration_mode = forms.ChoiceField(choices=Project.DemonstrationMode.choices, label="Demonstrations")


class PromptImportForm(forms.Form):
    file = forms.FileField(help_text="JSONL, JSON or CSV, optionally .gz")
    heldout_fraction = forms.FloatField(
        min_value=0.0, max_value=0.99, initial=0.0, required=False,
        label="Held-out fraction", help_text="Share of new prompts kept out of training (by content, reproducible).",
    )


class PromptFilterForm(forms.Form):
    q = forms.CharField(required=False, label="Search")
    split = forms.ChoiceField(choices=[("", "All splits"), ("train", "Train"), ("heldout", "Held out")], required=False)


def _filter_form_field(option: FilterOption) -> forms.Field:
    options = {"required": False, "help_text": option.help, **({"label": option.label} if option.label else {})}
    if option.kind == "names":
        # Leaving every box of a non-empty default (all sources) unticked is a mistake, not "any".
        options |= {"required": bool(option.default), "initial": list(option.default), "choices": option.choices}
        widget = forms.SelectMultiple if callable(option.choices) else forms.CheckboxSelectMultiple
        return forms.MultipleChoiceField(widget=widget, **options)
    if option.kind == "bool":
        return forms.BooleanField(initial=option.default, **options)
    if option.kind == "fraction":
        return forms.FloatField(min_value=0, max_value=option.maximum, initial=option.default, **options)
    return forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), **options)


_PairFilterFields = type(
    "_PairFilterFields", (forms.Form,), {option.name: _filter_form_field(option) for option in FILTER_OPTIONS}
)


class PairFilterForm(_PairFilterFields):
    """Which preference pairs: one field per field of annotation.pairs.PairFilter."""

    FILTER_FIELDS = list(FILTER_NAMES)

    def pair_filter(self) -> dict:
        data = {name: self.cleaned_data.get(name) for name in self.FILTER_FIELDS}
        return {name: value for name, value in data.items() if value not in (None, "", [])}


class ExportForm(PairFilterForm):
    projects = forms.ModelMultipleChoiceField(queryset=Project.objects.order_by("name"), to_field_name="slug")
    export_format = forms.ChoiceField(choices=Export.Format.choices, initial="jsonl", widget=forms.RadioSelect, label="Format")

    field_order = ["projects", "export_format"]


class DemonstrationFilterForm(forms.Form):
    """Which demonstrations: one field per field of annotation.demonstrations.DemonstrationFilter (SFT runs and
    SFT exports). ``demonstration_filter()`` gives the dict that demonstration_filter_from validates."""

    FILTER_FIELDS = list(demonstrations.FILTER_NAMES)

    sources = forms.MultipleChoiceField(
        choices=Demonstration.Source.choices, initial=list(demonstrations.SOURCES), widget=forms.CheckboxSelectMultiple,
        help_text=demonstrations.HELP["sources"],
    )
    statuses = forms.MultipleChoiceField(
        choices=Demonstration.Status.choices, initial=[Demonstration.Status.ACCEPTED], widget=forms.CheckboxSelectMultiple,
        label="Review status", help_text=demonstrations.HELP["statuses"],
    )
    rejection_jobs = forms.CharField(
        required=False, label="Rejection-sampling jobs", help_text=demonstrations.HELP["rejection_jobs"] + " E.g. 3, 7."
    )
    created_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text=demonstrations.HELP["created_from"])
    created_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text=demonstrations.HELP["created_to"])
    eval_fraction = forms.FloatField(
        required=False, min_value=0, max_value=demonstrations.MAX_EVAL_FRACTION, initial=0.1, help_text=demonstrations.HELP["eval_fraction"]
    )

    def demonstration_filter(self) -> dict:
        data = {name: self.cleaned_data.get(name) for name in demonstrations.FILTER_NAMES}
        return {name: value for name, value in data.items() if value not in (None, "", [])}


class SFTExportForm(DemonstrationFilterForm):
    projects = forms.ModelMultipleChoiceField(queryset=Project.objects.order_by("name"), to_field_name="slug")
    export_format = forms.ChoiceField(
        choices=[
            ("jsonl", "JSONL (TRL SFT messages)"), ("parquet", "Parquet (TRL SFT messages)"),
            ("hf", "Hugging Face datasets folder, train/test (zip)"),
        ],
        initial="jsonl", widget=forms.RadioSelect, label="Format",
    )

    field_order = ["projects", "export_format"]


class JobFilterForm(forms.Form):
    """Which jobs the Jobs page and ``GET /api/jobs/`` list."""

    kind = forms.ChoiceField(required=False)
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *Job.Status.choices])
    project = forms.CharField(required=False, widget=forms.Select, help_text="A project's slug.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [("", "Every kind"), *((model.job_kind, model.kind_label.capitalize()) for model in job_kinds())]
        self.fields["project"].widget.choices = [("", "Every project"), *Project.objects.order_by("name").values_list("slug", "name")]

    def selection(self) -> JobFilter:
        """The filter; a field that is not valid (an unknown kind in a hand-written URL) filters on nothing."""
        if not self.is_bound:
            return JobFilter()
        self.is_valid()
        return JobFilter(**{name: self.cleaned_data.get(name, "") for name in self.fields})
