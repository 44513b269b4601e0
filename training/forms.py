import copy

from django import forms
from django.core.exceptions import ValidationError

from annotation.demonstrations import FILTER_NAMES as DEMONSTRATION_FILTER_NAMES
from annotation.forms import DemonstrationFilterForm, PairFilterForm
from annotation.models import Project
from config.web import add_validation_errors
from generation.forms import SamplingForm, prompt_ids_from
from generation.models import ModelVersion
from training.evaluation import MAX_SEND
from training.models import TrainingRun
from training.trainers.lengths import MIN_EVAL_PAIRS, MIN_TRAIN_PAIRS
from training.trainers.settings import (
    DEFAULT_BETA, DPO_LOSS_TYPES, KINDS, LABELS, ONLINE, ONLY_FOR, SFT, TOO_LONG_CHOICES, TrainingSettings, applies,
)

AUTO_CHOICES = [("auto", "Automatic for the device"), ("true", "On"), ("false", "Off")]
DEFAULTS = TrainingSettings(kind="grpo")
TOO_LONG_TEXT = {"truncate": "Truncate them (keep every pair)", "drop": "Drop them"}
DEMONSTRATION_PREFIX = "demo_"
DEMONSTRATION_LABELS = {"sources": "Sources", "created_from": "Created from", "created_to": "Created to", "eval_fraction": "Eval fraction"}


def _demonstration_field(name: str, field: forms.Field) -> forms.Field:
    field = copy.deepcopy(field)
    field.label = field.label or DEMONSTRATION_LABELS.get(name)
    return field


# The demonstration filter's fields (annotation.forms.DemonstrationFilterForm) under demo_* names: the run form also
# has the pair filter's fields, some of the same name.
_DemonstrationFilterFields = type(
    "_DemonstrationFilterFields",
    (forms.Form,),
    {DEMONSTRATION_PREFIX + name: _demonstration_field(name, field) for name, field in DemonstrationFilterForm.base_fields.items()},
)


class TrainingRunForm(PairFilterForm, _DemonstrationFilterFields):
    """What to train on and how. Settings left empty take their defaults (training/trainers/settings.py). DPO and
    reward runs choose pairs with the pair filter's fields, SFT runs demonstrations with the demo_* fields, GRPO and
    RLOO runs prompts (``prompts``, ``prompt_ids``) and a reward model (the page shows the ones of the kind chosen);
    only the selection of the chosen kind is required and used."""

    kind = forms.ChoiceField(choices=TrainingRun.Kind.choices, widget=forms.RadioSelect, initial="dpo")
    base_version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY).order_by("-created_at"),
        to_field_name="name", help_text="A base model or an earlier DPO, SFT, GRPO or RLOO round. Its lineage is shown below.",
    )
    projects = forms.ModelMultipleChoiceField(queryset=Project.objects.order_by("name"), to_field_name="slug")
    reward_version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD).order_by("-created_at"), to_field_name="name",
        required=False, label="Reward model", help_text="GRPO and RLOO: the reward model that scores the policy's completions.",
    )
    prompts = forms.ChoiceField(
        choices=[("train", "The projects' train split"), ("ids", "These prompt ids")], initial="train", widget=forms.RadioSelect,
        required=False, label="Prompts",
    )
    prompt_ids = forms.CharField(required=False, help_text="Comma-separated, for “These prompt ids”.")
    # Settings
    lora_rank = forms.IntegerField(initial=DEFAULTS.lora_rank, min_value=1)
    lora_alpha = forms.IntegerField(initial=DEFAULTS.lora_alpha, min_value=1)
    lora_dropout = forms.FloatField(initial=DEFAULTS.lora_dropout, min_value=0)
    target_modules = forms.CharField(initial=", ".join(DEFAULTS.target_modules), help_text="Comma-separated, or all-linear.")
    load_in_4bit = forms.BooleanField(required=False, initial=True, label="Load the base in 4 bits (NF4)")
    double_quant = forms.BooleanField(required=False, initial=True, label="Double quantization")
    beta = forms.FloatField(
        required=False, help_text="Empty: " + ", ".join(f"{beta} for {kind.upper()}" for kind, beta in DEFAULT_BETA.items()) + ".",
    )
    loss_type = forms.MultipleChoiceField(
        choices=[(loss, loss) for loss in DPO_LOSS_TYPES], initial=["sigmoid"], required=False,
        help_text="DPO only; several are summed.", widget=forms.SelectMultiple(attrs={"size": 4}),
    )
    label_smoothing = forms.FloatField(initial=0.0, required=False, help_text="DPO robust / exo_pair.")
    use_margin = forms.BooleanField(required=False, initial=True, label="Use the rank gap as margin (reward model)")
    learning_rate = forms.FloatField(
        required=False, help_text="Empty: 5e-5 for DPO, 1e-4 for a reward model, 2e-4 for SFT, 1e-5 for GRPO and RLOO.",
    )
    epochs = forms.FloatField(initial=DEFAULTS.epochs)
    batch_size = forms.IntegerField(initial=DEFAULTS.batch_size, min_value=1)
    gradient_accumulation = forms.IntegerField(initial=DEFAULTS.gradient_accumulation, min_value=1)
    max_length = forms.IntegerField(initial=DEFAULTS.max_length, help_text="Prompt + response, in the base's tokens.")
    too_long = forms.ChoiceField(
        choices=[(choice, TOO_LONG_TEXT[choice]) for choice in TOO_LONG_CHOICES], initial=DEFAULTS.too_long, required=False,
        help_text=f"A run needs at least {MIN_TRAIN_PAIRS} training pairs (SFT: demonstrations) and, if any are held out, "
        f"{MIN_EVAL_PAIRS} eval ones.",
    )
    seed = forms.IntegerField(initial=0, min_value=0)
    eval_steps = forms.IntegerField(initial=0, min_value=0, required=False, help_text="Evaluate every N steps; 0: five times per run.")
    bf16 = forms.ChoiceField(choices=AUTO_CHOICES, initial="auto", label="bf16")
    gradient_checkpointing = forms.ChoiceField(choices=AUTO_CHOICES, initial="auto")
    num_generations = forms.IntegerField(
        required=False, initial=DEFAULTS.num_generations, min_value=2, help_text="Completions per prompt, compared with each other.",
    )
    max_completion_length = forms.IntegerField(required=False, initial=DEFAULTS.max_completion_length, min_value=1)
    temperature = forms.FloatField(required=False, initial=DEFAULTS.temperature, help_text="Sampling temperature of the completions.")
    max_steps = forms.IntegerField(initial=0, min_value=0, required=False, help_text="0: as many as the epochs take.")
    reward_weight = forms.FloatField(
        required=False, initial=DEFAULTS.reward_weight, help_text="The reward model's score is multiplied by this.",
    )
    length_penalty = forms.FloatField(
        required=False, initial=DEFAULTS.length_penalty, min_value=0,
        help_text="Weight of -(tokens beyond the target) / max completion length; 0: off.",
    )
    length_target = forms.IntegerField(
        required=False, initial=DEFAULTS.length_target, min_value=0, help_text="Completion tokens free of the length penalty.",
    )
    use_vllm = forms.ChoiceField(
        choices=[("auto", "Automatic (on a GPU where vLLM is installed)"), ("true", "On"), ("false", "Off: transformers")],
        initial="auto", required=False,
    )

    SETTING_FIELDS = [
        "lora_rank", "lora_alpha", "lora_dropout", "target_modules", "load_in_4bit", "double_quant", "beta", "loss_type",
        "label_smoothing", "use_margin", "num_generations", "max_completion_length", "temperature", "reward_weight",
        "length_penalty", "length_target", "learning_rate", "epochs", "max_steps", "batch_size", "gradient_accumulation",
        "max_length", "too_long", "seed", "eval_steps", "bf16", "gradient_checkpointing", "use_vllm",
    ]
    PROMPT_FIELDS = ["prompts", "prompt_ids"]

    DEMONSTRATION_FIELDS = [DEMONSTRATION_PREFIX + name for name in DEMONSTRATION_FILTER_NAMES]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, label in LABELS.items():  # "LoRA rank", not Django's "Lora rank"
            if name in self.fields:
                self.fields[name].label = label
        # Only the chosen kind's selection is required (the other one is hidden on the page, and not used).
        kind = self.data.get("kind") if self.is_bound else self.initial.get("kind")
        for name in self.FILTER_FIELDS if kind == SFT else self.DEMONSTRATION_FIELDS:
            self.fields[name].required = False
        if kind in ONLINE:
            for name in self.FILTER_FIELDS:
                self.fields[name].required = False

    @property
    def is_sft(self) -> bool:
        return self.cleaned_data.get("kind") == SFT

    @property
    def is_online(self) -> bool:
        return self.cleaned_data.get("kind") in ONLINE

    def clean_prompt_ids(self):
        return prompt_ids_from(self.cleaned_data.get("prompt_ids", ""))

    def prompt_selection(self) -> dict:
        if self.cleaned_data.get("prompts") == "ids":
            return {"mode": "ids", "ids": self.cleaned_data["prompt_ids"]}
        return {"mode": "train"}

    def chosen_reward_version(self):
        """The reward model of an online run (None for the other kinds, whatever the hidden field holds)."""
        return self.cleaned_data.get("reward_version") if self.is_online else None

    def demonstration_filter(self) -> dict:
        data = {name: self.cleaned_data.get(DEMONSTRATION_PREFIX + name) for name in DEMONSTRATION_FILTER_NAMES}
        return {name: value for name, value in data.items() if value not in (None, "", [])}

    def selection(self) -> dict:
        """What the service takes as ``pair_filter``: the pair filter, the demonstration filter of an SFT run, or the
        prompt selection of an online run."""
        if self.is_online:
            return self.prompt_selection()
        return self.demonstration_filter() if self.is_sft else self.pair_filter()

    def add_service_errors(self, exc) -> None:
        """A service's ValidationError beside the field it names: an SFT run's filter errors name the demonstration
        filter's fields, which are the demo_* fields here."""
        if self.is_sft and hasattr(exc, "error_dict"):
            exc = ValidationError({
                DEMONSTRATION_PREFIX + name if name in DEMONSTRATION_FILTER_NAMES else name: errors
                for name, errors in exc.error_dict.items()
            })
        if self.is_online and hasattr(exc, "error_dict"):
            exc = ValidationError({"prompts" if name == "prompt_selection" else name: errors for name, errors in exc.error_dict.items()})
        add_validation_errors(self, exc)

    def setting_fields(self) -> list[tuple[forms.BoundField, str]]:
        """Each setting's field and the kinds it is hidden for (those it does not apply to), for the page's CSS."""
        return [
            (self[name], " ".join(kind for kind in KINDS if not applies(name, kind)) if name in ONLY_FOR else "")
            for name in self.SETTING_FIELDS
        ]

    def settings(self) -> dict:
        """The settings that apply to the chosen kind (DPO-only ones are dropped for a reward model and back)."""
        kind = self.cleaned_data["kind"]
        values = {name: self.cleaned_data.get(name) for name in self.SETTING_FIELDS if applies(name, kind)}
        return {name: value for name, value in values.items() if value not in (None, "", [])}


class ScoringJobForm(forms.Form):
    reward_version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD).order_by("-created_at"), to_field_name="name"
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _preselect_the_only_reward_model(self)


class EvaluationForm(SamplingForm):
    """Which versions answer which prompts, judged by which reward model."""

    name = forms.CharField(max_length=200, required=False, help_text="A few words to find it again (optional).")
    versions = forms.ModelMultipleChoiceField(
        queryset=ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY).order_by("-created_at"), to_field_name="name",
        widget=forms.CheckboxSelectMultiple, help_text="2 to 4 policy versions; columns in this order (newest first).",
    )
    judge = forms.ModelChoiceField(
        queryset=ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD).order_by("-created_at"), to_field_name="name",
        required=False, empty_label="No judge: a side-by-side to read",
        help_text="A reward model that scores every response: win rates with 95% intervals.",
    )
    prompts = forms.ChoiceField(
        choices=[("heldout", "The held-out split"), ("ids", "These prompt ids"), ("typed", "Prompts typed here")],
        initial="heldout", widget=forms.RadioSelect,
    )
    prompt_ids = forms.CharField(required=False, help_text="Comma-separated, for “These prompt ids”.")
    typed = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}), help_text="One prompt per line.")
    samples = forms.IntegerField(initial=1, min_value=1, max_value=8, help_text="Responses per prompt and version.")

    field_order = ["name", "versions", "judge", "prompts", "prompt_ids", "typed", "samples"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _preselect_the_only_reward_model(self, "judge")

    def clean_prompt_ids(self):
        return prompt_ids_from(self.cleaned_data.get("prompt_ids", ""))

    def selection(self) -> dict:
        mode = self.cleaned_data["prompts"]
        if mode == "ids":
            return {"mode": mode, "ids": self.cleaned_data["prompt_ids"]}
        if mode == "typed":
            return {"mode": mode, "typed": self.cleaned_data["typed"].splitlines()}
        return {"mode": mode}


class SendToLabelersForm(forms.Form):
    project = forms.ModelChoiceField(
        queryset=Project.objects.filter(responses_per_item=2), to_field_name="slug",
        help_text="A project with K = 2: its labelers rank the pairs blind.",
    )
    version_a = forms.ModelChoiceField(queryset=ModelVersion.objects.none(), to_field_name="name", label="Version")
    version_b = forms.ModelChoiceField(queryset=ModelVersion.objects.none(), to_field_name="name", label="against")
    limit = forms.IntegerField(
        min_value=1, max_value=MAX_SEND, required=False, help_text=f"At most this many pairs (empty: up to {MAX_SEND:,}).",
    )

    def __init__(self, *args, versions, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("version_a", "version_b"):
            self.fields[name].queryset = ModelVersion.objects.filter(pk__in=[v.pk for v in versions])
        if len(versions) >= 2:
            self.initial.setdefault("version_a", versions[0])
            self.initial.setdefault("version_b", versions[1])


def _preselect_the_only_reward_model(form, name: str = "reward_version") -> None:
    if form.initial.get(name) is None:
        only = list(form.fields[name].queryset[:2])
        if len(only) == 1:
            form.initial[name] = only[0]


class QueueOrderForm(forms.Form):
    queue_order = forms.ChoiceField(choices=Project.QueueOrder.choices, widget=forms.RadioSelect)
    reward_version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD).order_by("-created_at"),
        to_field_name="name", required=False,
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _preselect_the_only_reward_model(self)
