from django import forms

from annotation.models import MAX_K, MAX_RANKINGS_PER_ITEM, MIN_K, MIN_RANKINGS_PER_ITEM


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
