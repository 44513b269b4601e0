from rest_framework import serializers

from annotation.models import Project
from generation.models import ModelVersion
from training.models import ScoringJob, TrainingMetric, TrainingRun


class TrainingRunCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=TrainingRun.Kind.values)
    base_version = serializers.SlugRelatedField(slug_field="name", queryset=ModelVersion.objects.all())
    projects = serializers.SlugRelatedField(slug_field="slug", queryset=Project.objects.all(), many=True, allow_empty=False)
    pair_filter = serializers.DictField(
        default=dict,
        help_text="sources ([human, import]), exclude_flagged, min_agreement (0-1), created_from / created_to (YYYY-MM-DD), eval_fraction",
    )
    settings = serializers.DictField(default=dict, help_text="Training settings; see the README (Training). Missing ones take their defaults.")


class TrainingRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    status = serializers.CharField()
    base_version = serializers.CharField(source="base_version.name")
    projects = serializers.SerializerMethodField()
    config = serializers.DictField()
    pair_filter = serializers.DictField()
    dataset_manifest = serializers.DictField()
    step = serializers.IntegerField()
    total_steps = serializers.IntegerField()
    progress = serializers.SerializerMethodField()
    summary = serializers.DictField()
    model_version = serializers.SerializerMethodField()
    cancel_requested = serializers.BooleanField()
    error = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField()

    def get_projects(self, run) -> list[str]:
        return [project.slug for project in run.projects.all()]

    def get_progress(self, run) -> dict:
        from training.selectors import run_progress

        return run_progress(run).as_dict()

    def get_model_version(self, run) -> str | None:
        version = ModelVersion.objects.filter(training_run=run).first()
        return version.name if version else None


class TrainingMetricSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrainingMetric
        fields = ["step", "split", "name", "value"]


class ScoringJobCreateSerializer(serializers.Serializer):
    project = serializers.SlugRelatedField(slug_field="slug", queryset=Project.objects.all())
    reward_version = serializers.SlugRelatedField(slug_field="name", queryset=ModelVersion.objects.all())


class ScoringJobSerializer(serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug")
    reward_version = serializers.CharField(source="reward_version.name")
    accuracy = serializers.SerializerMethodField()

    class Meta:
        model = ScoringJob
        fields = [
            "id", "project", "reward_version", "status", "candidates_total", "candidates_done", "cancel_requested",
            "error", "accuracy", "created_at", "started_at", "finished_at",
        ]

    def get_accuracy(self, job) -> dict:
        from training.selectors import reward_accuracy

        return reward_accuracy(job.reward_version, job.project)


class QueueOrderSerializer(serializers.Serializer):
    order = serializers.ChoiceField(choices=Project.QueueOrder.values)
    reward_version = serializers.SlugRelatedField(
        slug_field="name", queryset=ModelVersion.objects.all(), required=False, allow_null=True
    )
