from rest_framework import serializers

from generation.models import ModelVersion


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
    model = serializers.SlugRelatedField(slug_field="name", queryset=ModelVersion.objects.all())
    n = serializers.IntegerField(min_value=1, max_value=8)


class GenerationJobCreateSerializer(serializers.Serializer):
    project = serializers.SlugField()
    models = PlanEntrySerializer(many=True, allow_empty=False)
    prompts = serializers.DictField(default=dict, help_text='{"mode": "missing" | "heldout" | "ids", "ids": [...]}')
    sampling = serializers.DictField(default=dict, help_text="temperature, top_p, max_new_tokens, seed, stop")
    backend = serializers.ChoiceField(choices=["auto", "vllm", "transformers"], default="auto")


class GenerationJobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    status = serializers.CharField()
    backend = serializers.CharField()
    models = serializers.SerializerMethodField()
    prompt_selection = serializers.DictField()
    sampling = serializers.DictField()
    prompts_total = serializers.IntegerField()
    prompts_done = serializers.IntegerField()
    tokens_generated = serializers.IntegerField()
    load_seconds = serializers.FloatField()
    duplicates_dropped = serializers.IntegerField()
    cancel_requested = serializers.BooleanField()
    error = serializers.CharField()
    progress = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField()

    def get_models(self, job) -> list[dict]:
        return [{"model": entry.model_version.name, "n": entry.n} for entry in job.model_plan.all()]

    def get_progress(self, job) -> dict:
        from generation.selectors import job_progress

        return job_progress(job).as_dict()
