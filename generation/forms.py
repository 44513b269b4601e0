from django import forms

from generation.models import ModelVersion


class ModelVersionForm(forms.Form):
    name = forms.SlugField(max_length=100)
    base_model = forms.CharField(max_length=500, help_text="Hugging Face id (org/name) or a local folder path.")
    adapter_path = forms.CharField(max_length=500, required=False, help_text="Optional PEFT LoRA adapter folder.")
    kind = forms.ChoiceField(choices=ModelVersion.Kind.choices)
    parent = forms.ModelChoiceField(queryset=ModelVersion.objects.all(), required=False, to_field_name="name")
    notes = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
