from dataclasses import fields

from django import forms
from django.core.exceptions import ValidationError

from generation.backends.base import Sampling
from generation.jobs import MAX_NEW_TOKENS, MAX_SEED
from generation.models import GenerationJob, ModelVersion

DEFAULT_SAMPLING = Sampling()


class ModelVersionForm(forms.Form):
    name = forms.SlugField(max_length=100)
    base_model = forms.CharField(max_length=500, help_text="Hugging Face id (org/name), a local folder path, or an s3:// URI in the artifact store.")
    adapter_path = forms.CharField(max_length=500, required=False, help_text="Optional PEFT LoRA adapter folder (a local path or an s3:// URI).")
    kind = forms.ChoiceField(choices=ModelVersion.Kind.choices)
    parent = forms.ModelChoiceField(queryset=ModelVersion.objects.all(), required=False, to_field_name="name")
    notes = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)


class SamplingForm(forms.Form):
    """The sampling settings and backend of a job that generates (generation jobs, evaluations), shown together."""

    temperature = forms.FloatField(initial=DEFAULT_SAMPLING.temperature, min_value=0, max_value=2)
    top_p = forms.FloatField(initial=DEFAULT_SAMPLING.top_p, min_value=0.01, max_value=1)
    max_new_tokens = forms.IntegerField(initial=DEFAULT_SAMPLING.max_new_tokens, min_value=1, max_value=MAX_NEW_TOKENS)
    seed = forms.IntegerField(initial=DEFAULT_SAMPLING.seed, min_value=0, max_value=MAX_SEED)
    stop = forms.CharField(required=False, help_text="Stop strings, one per line.", widget=forms.Textarea(attrs={"rows": 2}))
    backend = forms.ChoiceField(choices=GenerationJob.Backend.choices, initial="auto")

    SAMPLING_FIELDS = [*(setting.name for setting in fields(Sampling)), "backend"]

    def sampling(self):
        data = self.cleaned_data
        stops = [line for line in data.get("stop", "").splitlines() if line]
        return {**{setting.name: data[setting.name] for setting in fields(Sampling)}, "stop": stops}


def prompt_ids_from(raw: str) -> list[int]:
    try:
        return [int(part) for part in raw.replace(" ", "").split(",") if part]
    except ValueError as exc:
        raise ValidationError("Prompt ids must be whole numbers separated by commas.") from exc


class GenerationJobForm(SamplingForm):
    """One `n_<version id>` field per policy version: how many candidates it contributes per prompt."""

    prompts = forms.ChoiceField(
        choices=[("missing", "Prompts without candidates yet"), ("heldout", "The held-out split"), ("ids", "These prompt ids")],
        initial="missing", widget=forms.RadioSelect,
    )
    prompt_ids = forms.CharField(required=False, help_text="Comma-separated, for “These prompt ids”.")

    def __init__(self, *args, versions, k, **kwargs):
        super().__init__(*args, **kwargs)
        self.versions = list(versions)
        self.k = k
        for index, version in enumerate(self.versions):
            self.fields[f"n_{version.pk}"] = forms.IntegerField(
                min_value=0, max_value=8, initial=k if index == 0 else 0, label=version.name, required=False
            )

    def model_fields(self):
        return [self[f"n_{version.pk}"] for version in self.versions]

    def clean_prompt_ids(self):
        return prompt_ids_from(self.cleaned_data.get("prompt_ids", ""))

    def plan(self):
        return [(version, self.cleaned_data.get(f"n_{version.pk}") or 0) for version in self.versions if self.cleaned_data.get(f"n_{version.pk}")]

    def selection(self):
        mode = self.cleaned_data["prompts"]
        return {"mode": mode, "ids": self.cleaned_data["prompt_ids"]} if mode == "ids" else {"mode": mode}
