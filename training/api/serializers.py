import json
from dataclasses import fields

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from annotation.api.jobs import JOB_STATE_FIELDS, JobProgressSerializer, JobStateSerializer
from annotation.api.serializers import DemonstrationFilterField, DemonstrationFilterSerializer, PairFilterField, PairFilterSerializer
from config.job_queue import job_progress
from annotation.demonstrations import demonstration_filter_from
from annotation.models import Project
from annotation.pairs import pair_filter_from
from generation.models import ModelVersion
from training import selectors
from training.services import FILTER_FIELD  # the field holding each kind's selection (the others must be left out)
from training.models import ScoringJob, TrainingMetric, TrainingRun, TrainingSample
from training.trainers.settings import (
    DEFAULT_BETA, DEFAULT_LEARNING_RATE, ONLY_FOR, TOO_LONG_CHOICES, SettingsError, TrainingSettings, kinds_of,
    training_settings,
)

# --- training settings, described from the TrainingSettings dataclass ---------------------------------------------

_DECIDED_LATER = {
    "bf16": "auto (null: decided for the device)",
    "gradient_checkpointing": "auto (null: decided for the device)",
    "learning_rate": f"0, the kind's default ({', '.join(f'{kind} {rate}' for kind, rate in DEFAULT_LEARNING_RATE.items())})",
    "beta": f"null, the kind's default ({', '.join(f'{kind} {beta}' for kind, beta in DEFAULT_BETA.items())})",
    "use_vllm": "auto (null: on a GPU where vLLM is installed)",
}


def _setting_field(setting) -> serializers.Field:
    default = json.dumps(list(setting.default) if isinstance(setting.default, tuple) else setting.default)
    only = f" Only for {kinds_of(setting.name)} runs." if setting.name in ONLY_FOR else ""
    options = {"required": False, "help_text": f"Default: {_DECIDED_LATER.get(setting.name, default)}.{only}"}
    if setting.name == "too_long":
        options["help_text"] += " truncate: keep longer pairs, cut to max_length; drop: leave them out."
        return serializers.ChoiceField(choices=TOO_LONG_CHOICES, **options)
    if setting.type == "tuple[str, ...]":
        return serializers.ListField(child=serializers.CharField(), **options)
    if setting.type in ("bool", "bool | None"):
        return serializers.BooleanField(allow_null=setting.type == "bool | None", **options)
    if setting.type == "float | None":
        return serializers.FloatField(allow_null=True, **options)
    return {"int": serializers.IntegerField, "float": serializers.FloatField, "str": serializers.CharField}[setting.type](**options)


TrainingSettingsSerializer = type(
    "TrainingSettingsSerializer",
    (serializers.Serializer,),
    {
        "__doc__": "Training settings; missing ones take their defaults. Validated by training.trainers.settings.",
        "__module__": __name__,
        **{
            setting.name: _setting_field(setting)
            for setting in fields(TrainingSettings)
            if setting.name != "kind"
        },
    },
)


@extend_schema_field(TrainingSettingsSerializer)
class TrainingSettingsField(serializers.DictField):
    """Training settings, passed to training.trainers.settings as they come."""


# --- training runs ---------------------------------------------------------------------------------------------------


class RunPromptSelectionSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["train", "ids"], help_text="train: the projects' train split; ids: the listed prompts.")
    ids = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, help_text="For mode ids.")


@extend_schema_field(RunPromptSelectionSerializer)
class PromptSelectionField(serializers.DictField):
    """An online run's prompts, validated by training.selectors.prompt_selection_from."""




class TrainingRunCreateSerializer(serializers.Serializer):
    """A launch request. Model versions are looked up by name and projects by slug, so an unknown one is a 400 on its
    field; the kind of model (policy or reward) is the service's check. DPO and reward runs take ``pair_filter``;
    SFT runs take ``demonstration_filter``; GRPO and RLOO runs take ``prompt_selection`` and ``reward_version``
    (giving another kind's selection is a 400)."""

    kind = serializers.ChoiceField(choices=TrainingRun.Kind.choices)
    base_version = serializers.SlugRelatedField(slug_field="name", queryset=ModelVersion.objects.all())
    projects = serializers.SlugRelatedField(slug_field="slug", queryset=Project.objects.all(), many=True, allow_empty=False)
    pair_filter = PairFilterField(default=dict, help_text="Which preference pairs (dpo and reward runs).")
    demonstration_filter = DemonstrationFilterField(default=dict, help_text="Which demonstrations (sft runs).")
    prompt_selection = PromptSelectionField(default=dict, help_text='Which prompts (grpo and rloo runs); default {"mode": "train"}.')
    reward_version = serializers.SlugRelatedField(
        slug_field="name", queryset=ModelVersion.objects.all(), required=False, allow_null=True, default=None,
        help_text="grpo and rloo: the reward model the policy is trained against.",
    )
    settings = TrainingSettingsField(
        default=dict, help_text="Training settings; see the README (Training). Missing ones take their defaults."
    )

    def validate_projects(self, projects):
        return list(dict.fromkeys(projects))

    def validate(self, attrs):
        # The service validates these again; checking here puts each message under "settings" or "pair_filter", so a
        # client can tell a bad setting from a bad top-level field.
        errors = {}
        settings_errors = _settings_errors(attrs["kind"], attrs["settings"])
        if settings_errors:
            errors["settings"] = settings_errors
        used = FILTER_FIELD[attrs["kind"]]
        filter_errors = _SELECTION_ERRORS[used](attrs[used])
        if filter_errors:
            errors[used] = filter_errors
        for other in set(FILTER_FIELD.values()) - {used}:
            if attrs.get(other):
                errors[other] = [f"Not used by a {attrs['kind']} run: give {used}."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs

    @staticmethod
    def selection(values: dict) -> dict:
        """The selection the service takes as ``pair_filter``: the demonstration filter for an SFT run, the prompt
        selection for an online one."""
        return values[FILTER_FIELD[values["kind"]]]


def _settings_errors(kind: str, data: dict) -> dict[str, list[str]]:
    try:
        training_settings(kind, data)
    except SettingsError as exc:
        return {name: [message] for name, message in exc.errors.items()}
    return {}


def _pair_filter_errors(data: dict) -> dict[str, list[str]]:
    try:
        pair_filter_from(data)
    except DjangoValidationError as exc:
        return exc.message_dict
    return {}


def _demonstration_filter_errors(data: dict) -> dict[str, list[str]]:
    try:
        demonstration_filter_from(data)
    except DjangoValidationError as exc:
        return exc.message_dict
    return {}


def _prompt_selection_errors(data: dict) -> list[str]:
    try:
        selectors.prompt_selection_from(data)
    except DjangoValidationError as exc:
        return [message for messages in exc.message_dict.values() for message in messages]
    return []


_SELECTION_ERRORS = {
    "pair_filter": _pair_filter_errors, "demonstration_filter": _demonstration_filter_errors, "prompt_selection": _prompt_selection_errors,
}


class SplitLengthsSerializer(serializers.Serializer):
    selected = serializers.IntegerField()
    fit = serializers.IntegerField(help_text="Pairs whose chosen and rejected sequences fit max_length whole.")
    used = serializers.IntegerField(help_text="Pairs the trainer would use (fit, or truncated under too_long=truncate).")
    truncated = serializers.IntegerField()
    dropped = serializers.IntegerField()


class LengthsSerializer(serializers.Serializer):
    max_length = serializers.IntegerField()
    too_long = serializers.ChoiceField(choices=TOO_LONG_CHOICES)
    train = SplitLengthsSerializer()
    eval = SplitLengthsSerializer()
    longest = serializers.IntegerField(help_text="Tokens of the longest prompt + response sequence selected.")
    p95 = serializers.IntegerField(help_text="95th percentile of each pair's longer sequence, in tokens.")
    keep_all_max_length = serializers.IntegerField(help_text="The max_length at which every selected pair fits whole.")
    all_fit = serializers.BooleanField()


class TrainingRunCheckSerializer(serializers.Serializer):
    """What a launch with this body would train on; nothing is queued. The length figures count pairs, an SFT run's
    demonstrations or an online run's prompts (``unit``)."""

    unit = serializers.ChoiceField(choices=["pairs", "demonstrations", "prompts"], help_text="What the run trains on.")
    pairs = serializers.DictField(
        child=serializers.IntegerField(), allow_null=True, help_text="Selected pairs: {train, eval} (null for sft, grpo, rloo)."
    )
    demonstrations = serializers.DictField(
        child=serializers.IntegerField(), allow_null=True, help_text="Selected demonstrations of an sft run: {train, eval} (else null)."
    )
    prompts = serializers.DictField(
        child=serializers.IntegerField(), allow_null=True,
        help_text="Selected prompts of a grpo or rloo run: {train, eval}, eval always 0 (else null).",
    )
    reward_tokenizer = serializers.CharField(
        allow_blank=True,
        help_text="grpo and rloo: same (the reward model shares the policy's tokenizer) or re-tokenized (it scores the "
        "decoded text with its own); empty when not known here.",
    )
    sources = serializers.DictField(
        child=serializers.DictField(child=serializers.IntegerField()), allow_null=True,
        help_text="Selected demonstrations per split and source of an sft run: {train: {import: 12, ...}, eval: {...}} (else null).",
    )
    eval_rule = serializers.CharField()
    lengths = LengthsSerializer(allow_null=True, help_text="Null when the base's tokenizer could not be loaded here.")
    tokenizer_error = serializers.CharField(allow_blank=True)
    can_launch = serializers.BooleanField()
    refusal = serializers.CharField(allow_blank=True, help_text="Why a launch would be refused (too few pairs left).")


class PairsUsedSerializer(serializers.Serializer):
    train = serializers.IntegerField()
    eval = serializers.IntegerField()
    truncated = serializers.IntegerField()
    dropped = serializers.IntegerField()


class RunProgressSerializer(JobProgressSerializer):
    seconds_per_step = serializers.FloatField(allow_null=True, help_text="Once training steps began (loading left out).")


class TrainingRunSerializer(JobStateSerializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=TrainingRun.Kind.choices)
    status = serializers.ChoiceField(choices=TrainingRun.Status.choices)
    base_version = serializers.CharField(source="base_version.name")
    reward_version = serializers.CharField(
        source="reward_version.name", allow_null=True, help_text="grpo and rloo: the reward model the policy was trained against."
    )
    projects = serializers.SerializerMethodField()
    config = TrainingSettingsField(help_text="The validated settings that apply to this kind of run.")
    pair_filter = serializers.SerializerMethodField(help_text="A dpo or reward run's filter as applied, every key filled in.")
    demonstration_filter = serializers.SerializerMethodField(help_text="An sft run's filter as applied, every key filled in.")
    prompt_selection = serializers.SerializerMethodField(help_text="A grpo or rloo run's prompts.")
    dataset_manifest = serializers.DictField(
        help_text="Row counts and content hash of the exact pairs (sft: demonstrations, per source, with the rejection-"
        "sampling jobs behind them) used."
    )
    pairs_used = serializers.SerializerMethodField(
        help_text="Pairs the trainer used after the max-length rule (null until its datasets are built, and for sft)."
    )
    demonstrations_used = serializers.SerializerMethodField(
        help_text="Demonstrations an sft run's trainer used after the max-length rule (null until its datasets are built, "
        "and for dpo and reward runs)."
    )
    prompts_used = serializers.SerializerMethodField(
        help_text="Prompts a grpo or rloo run's trainer used after the max-length rule (null until its dataset is built, "
        "and for the other kinds)."
    )
    step = serializers.IntegerField()
    total_steps = serializers.IntegerField()
    progress = serializers.SerializerMethodField()
    summary = serializers.DictField(help_text="Runtime, samples per second, examples used, device (once finished).")
    model_version = serializers.SerializerMethodField(help_text="The model version the run registered, once it succeeded.")
    cancel_requested = serializers.BooleanField()
    error = serializers.CharField(allow_blank=True)
    requested_by = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    training_started_at = serializers.DateTimeField(allow_null=True, help_text="When the first step began (after loading).")
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_projects(self, run) -> list[str]:
        return sorted(project.slug for project in run.projects.all())

    @extend_schema_field(PairFilterSerializer(allow_null=True))
    def get_pair_filter(self, run) -> dict | None:
        return run.pair_filter if FILTER_FIELD[run.kind] == "pair_filter" else None

    @extend_schema_field(DemonstrationFilterSerializer(allow_null=True))
    def get_demonstration_filter(self, run) -> dict | None:
        return run.pair_filter if run.kind == TrainingRun.Kind.SFT else None

    @extend_schema_field(RunPromptSelectionSerializer(allow_null=True))
    def get_prompt_selection(self, run) -> dict | None:
        return run.pair_filter if run.is_online else None

    @extend_schema_field(PairsUsedSerializer(allow_null=True))
    def get_pairs_used(self, run) -> dict | None:
        from training.services import pairs_used

        return pairs_used(run) if run.trains_on == "pairs" else None

    @extend_schema_field(PairsUsedSerializer(allow_null=True))
    def get_demonstrations_used(self, run) -> dict | None:
        from training.services import pairs_used

        return pairs_used(run) if run.kind == TrainingRun.Kind.SFT else None

    @extend_schema_field(PairsUsedSerializer(allow_null=True))
    def get_prompts_used(self, run) -> dict | None:
        from training.services import pairs_used

        return pairs_used(run) if run.is_online else None

    @extend_schema_field(RunProgressSerializer)
    def get_progress(self, run) -> dict:
        return selectors.run_progress(run)

    def get_model_version(self, run) -> str | None:
        version = getattr(run, "model_version", None)  # reverse one-to-one: missing until the run succeeds
        return version.name if version else None

    def get_requested_by(self, run) -> str | None:
        return run.requested_by.username if run.requested_by else None


class TrainingMetricSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrainingMetric
        fields = ["step", "split", "name", "value"]


class TrainingSampleSerializer(serializers.ModelSerializer):
    rewards = serializers.DictField(child=serializers.FloatField(), help_text="Each reward function's value: reward_model, length_penalty.")
    messages = serializers.ListField(child=serializers.DictField(child=serializers.CharField()), help_text="The prompt.")

    class Meta:
        model = TrainingSample
        fields = ["step", "messages", "completion", "tokens", "reward", "rewards"]


# --- scoring jobs and the queue order -----------------------------------------------------------------------------


class ScoringJobCreateSerializer(serializers.Serializer):
    project = serializers.SlugRelatedField(slug_field="slug", queryset=Project.objects.all())
    reward_version = serializers.SlugRelatedField(slug_field="name", queryset=ModelVersion.objects.all())


class AccuracySerializer(serializers.Serializer):
    pairs = serializers.IntegerField(help_text="Human pairs the reward model did not train on, both responses scored.")
    correct = serializers.IntegerField(help_text="Pairs where the chosen response scored higher.")
    accuracy = serializers.FloatField(allow_null=True, help_text="correct / pairs; null without pairs.")


class RewardAccuracySerializer(AccuracySerializer):
    project = serializers.CharField()
    reward_version = serializers.CharField()


class ScoringJobSerializer(JobStateSerializer, serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug")
    reward_version = serializers.CharField(source="reward_version.name")
    progress = serializers.SerializerMethodField()

    class Meta:
        model = ScoringJob
        fields = [
            "id", "project", "reward_version", "status", "candidates_total", "candidates_done", "progress",
            "cancel_requested", "error", "created_at", "started_at", "finished_at", *JOB_STATE_FIELDS,
        ]

    @extend_schema_field(JobProgressSerializer)
    def get_progress(self, job) -> dict:
        return job_progress(job).as_dict()


class ScoringJobDetailSerializer(ScoringJobSerializer):
    """A job plus its reward model's accuracy on the project (left out of lists: it reads every pair of the project)."""

    accuracy = serializers.SerializerMethodField()

    class Meta(ScoringJobSerializer.Meta):
        fields = [*ScoringJobSerializer.Meta.fields, "accuracy"]

    @extend_schema_field(AccuracySerializer)
    def get_accuracy(self, job) -> dict:
        return selectors.reward_accuracy(job.reward_version, job.project)


class QueueOrderSerializer(serializers.Serializer):
    order = serializers.ChoiceField(choices=Project.QueueOrder.choices)
    reward_version = serializers.SlugRelatedField(
        slug_field="name", queryset=ModelVersion.objects.all(), required=False, allow_null=True,
        help_text="The reward model whose scores order the queue (needed for reward_spread).",
    )
