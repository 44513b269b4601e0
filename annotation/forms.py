from django import forms

from annotation.models import MAX_K, MAX_RANKINGS_PER_ITEM, MIN_K, MIN_RANKINGS_PER_ITEM, Export, PreferencePair, Project


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


class PromptImportForm(forms.Form):
    file = forms.FileField(help_text="JSONL, JSON or CSV, optionally .gz")
    heldout_fraction = forms.FloatField(
        min_value=0.0, max_value=0.99, initial=0.0, required=False,
        label="Held-out fraction", help_text="Share of new prompts kept out of training (by content, reproducible).",
    )


class PromptFilterForm(forms.Form):
    q = forms.CharField(required=False, label="Search")
    split = forms.ChoiceField(choices=[("", "All splits"), ("train", "Train"), ("heldout", "Held out")], required=False)


class PairFilterForm(forms.Form):
    """Which preference pairs: the fields of annotation.pairs.PairFilter."""

    FILTER_FIELDS = ["sources", "exclude_flagged", "min_agreement", "created_from", "created_to", "model_versions", "eval_fraction"]

    sources = forms.MultipleChoiceField(
        choices=PreferencePair.Source.choices, initial=list(PreferencePair.Source.values), widget=forms.CheckboxSelectMultiple
    )
    exclude_flagged = forms.BooleanField(required=False, initial=True, label="Leave out flagged and retired items")
    min_agreement = forms.FloatField(
        required=False, min_value=0, max_value=1,
        help_text="Only human pairs of items whose labelers agree at least this much (0–1); imported pairs are kept.",
    )
    created_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    created_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    eval_fraction = forms.FloatField(
        required=False, min_value=0, max_value=0.9, initial=0.1,
        help_text="Held-out prompts go to eval; with none marked, this share of prompts (by content hash).",
    )
    model_versions = forms.ModelMultipleChoiceField(
        queryset=None, to_field_name="name", required=False, help_text="Only pairs whose two responses come from these models.",
    )

    def __init__(self, *args, **kwargs):
        from generation.models import ModelVersion

        super().__init__(*args, **kwargs)
        self.fields["model_versions"].queryset = ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY).order_by("name")

    def pair_filter(self) -> dict:
        data = {name: self.cleaned_data.get(name) for name in self.FILTER_FIELDS}
        data["model_versions"] = [version.name for version in data["model_versions"] or []]
        return {name: value for name, value in data.items() if value not in (None, "", [])}


class ExportForm(PairFilterForm):
    projects = forms.ModelMultipleChoiceField(queryset=Project.objects.order_by("name"), to_field_name="slug")
    export_format = forms.ChoiceField(choices=Export.Format.choices, initial="jsonl", widget=forms.RadioSelect, label="Format")

    field_order = ["projects", "export_format"]
