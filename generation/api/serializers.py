import math

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from annotation.api.jobs import JobProgressSerializer, JobStateSerializer
from config.api import MAX_ID
from generation.backends.base import Sampling
from generation.jobs import MAX_NEW_TOKENS, MAX_SEED, MAX_SELECTED_IDS, MAX_STOP_CHARS, MAX_STOP_STRINGS
from generation.models import GenerationJob, ModelVersion


class ModelVersionSerializer(serializers.ModelSerializer):
    parent = serializers.SlugRelatedField(slug_field="name", queryset=ModelVersion.objects.all(), required=False, allow_null=True)

    class Meta:
        model = ModelVersion
        fields = [
            "id", "name", "base_model", "adapter_path", "kind", "parent", "training_run",
            "config", "metrics", "notes", "created_at",
        ]
        read_only_fields = ["id", "training_run", "metrics", "created_at"]


class PlanEntrySerializer(serializers.Serializer):
    model = serializers.SlugRelatedField(
        slug_field="name", queryset=ModelVersion.objects.all(), help_text="A policy model version's name."
    )
    n = serializers.IntegerField(min_value=1, max_value=8, help_text="Candidates per prompt from this model.")


class PromptSelectionSerializer(serializers.Serializer):
    MODES = [
        ("missing", "Prompts without a ranking item yet"),
        ("heldout", "The held-out split"),
        ("ids", "The prompts listed in ids"),
    ]

    mode = serializers.ChoiceField(choices=MODES, default="missing")
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID), required=False, max_length=MAX_SELECTED_IDS,
        help_text=f"Prompt ids, for mode ids (at most {MAX_SELECTED_IDS:,}).",
    )

    def validate(self, attrs):
        if attrs["mode"] != "ids":
            attrs.pop("ids", None)  # stored with the job: only what the selection used
        return attrs


@extend_schema_field(PromptSelectionSerializer)
class PromptSelectionField(serializers.DictField):
    """A stored prompt selection, shown as it was saved."""


DEFAULT_SAMPLING = Sampling()


class SamplingSerializer(serializers.Serializer):
    """Documents the ``sampling`` object; the generation service validates it (and names the field it refuses)."""

    temperature = serializers.FloatField(
        required=False, min_value=0, max_value=2, help_text=f"0 to 2 (default {DEFAULT_SAMPLING.temperature}); 0 is greedy."
    )
    top_p = serializers.FloatField(
        required=False, min_value=0, max_value=1, help_text=f"Above 0, at most 1 (default {DEFAULT_SAMPLING.top_p})."
    )
    max_new_tokens = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_NEW_TOKENS, help_text=f"Default {DEFAULT_SAMPLING.max_new_tokens}."
    )
    seed = serializers.IntegerField(required=False, min_value=0, max_value=MAX_SEED, help_text=f"Default {DEFAULT_SAMPLING.seed}.")
    stop = serializers.ListField(
        child=serializers.CharField(max_length=MAX_STOP_CHARS), required=False, max_length=MAX_STOP_STRINGS,
        help_text="Stop strings (default none): a list, even for one.",
    )


@extend_schema_field(SamplingSerializer)
class SamplingField(serializers.DictField):
    """Sampling settings, passed to the generation service as they come, but for numbers too large to be finite
    (JSON such as ``1e999``), which the service cannot convert."""

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        infinite = sorted(key for key, value in data.items() if isinstance(value, float) and not math.isfinite(value))
        if infinite:
            raise serializers.ValidationError({key: ["Must be a finite number."] for key in infinite})
        return data


class GenerationJobCreateSerializer(serializers.Serializer):
    project = serializers.SlugField(help_text="The project's slug (404 when there is no such project).")
    models = PlanEntrySerializer(many=True, allow_empty=False, help_text="Whose candidates: the n add up to the project's K.")
    prompts = PromptSelectionSerializer(required=False, help_text="Which prompts (default: those without an item yet).")
    sampling = SamplingField(default=dict)
    backend = serializers.ChoiceField(choices=GenerationJob.Backend.choices, default="auto")


class PlanEntryOutSerializer(serializers.Serializer):
    model = serializers.CharField()
    n = serializers.IntegerField()


class GenerationProgressSerializer(JobProgressSerializer):
    work_done = serializers.FloatField(help_text="Responses done plus the finished share of the batch now generating (the bar and ETA use it).")
    tokens = serializers.IntegerField(help_text="New tokens so far, the batch now generating included where the backend counts them (transformers).")
    tokens_per_second = serializers.FloatField(allow_null=True, help_text="While generating (model loading left out).")
    backend = serializers.CharField(help_text='For people: "transformers on cpu (auto chose it: no GPU)".')
    dropped = serializers.CharField(help_text="For people: what was dropped, why, and whether it was generated again.")


class GenerationJobSerializer(JobStateSerializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    status = serializers.ChoiceField(choices=GenerationJob.Status.choices)
    backend = serializers.ChoiceField(choices=GenerationJob.Backend.choices, help_text="As asked for.")
    backend_used = serializers.CharField(allow_blank=True, help_text="The backend that ran (what auto chose); blank before it starts.")
    backend_reason = serializers.CharField(allow_blank=True, help_text='"auto chose it: no GPU", "chosen for the job".')
    models = serializers.SerializerMethodField()
    prompt_selection = PromptSelectionField()
    sampling = SamplingField(help_text="The sampling settings, every key filled in.")
    prompts_total = serializers.IntegerField()
    prompts_done = serializers.IntegerField()
    responses_total = serializers.IntegerField(help_text="Prompts x K.")
    responses_done = serializers.IntegerField(help_text="Generated and kept.")
    tokens_generated = serializers.IntegerField(help_text="In the batches finished.")
    load_seconds = serializers.FloatField()
    duplicates_dropped = serializers.IntegerField(help_text="Responses dropped in all: dropped_empty + dropped_duplicate.")
    dropped_empty = serializers.IntegerField()
    dropped_duplicate = serializers.IntegerField(help_text="The same text as another response to its prompt.")
    top_up_rounds = serializers.IntegerField(help_text="Extra rounds run for prompts short of K (freshly seeded).")
    topped_up = serializers.IntegerField(help_text="Responses kept from the extra rounds.")
    prompts_short = serializers.IntegerField(help_text="Prompts still short of K at the end: they get no ranking item.")
    cancel_requested = serializers.BooleanField()
    error = serializers.CharField(allow_blank=True)
    progress = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    @extend_schema_field(PlanEntryOutSerializer(many=True))
    def get_models(self, job) -> list[dict]:
        return [{"model": entry.model_version.name, "n": entry.n} for entry in job.model_plan.all()]

    @extend_schema_field(GenerationProgressSerializer)
    def get_progress(self, job) -> dict:
        from generation.selectors import job_progress

        return job_progress(job)
