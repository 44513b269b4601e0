from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from rest_framework import serializers

from annotation.models import Project
from annotation.pairs import pair_filter_from
from generation.models import ModelVersion
from training import selectors
from training.models import ScoringJob, TrainingMetric, TrainingRun
from training.trainers.settings import SettingsError, training_settings



# --- training runs ---------------------------------------------------------------------------------------------------


class TrainingRunCreateSerializer(serializers.Serializer):
    """A launch request. Model versions are looked up by name and projects by slug, so an unknown one is a 400 on its
    field; the kind of model (policy or reward) is the service's check."""

    kind = serializers.ChoiceField(choices=TrainingRun.Kind.values)
    base_version = serializers.SlugRelatedField(slug_field="name", queryset=ModelVersion.objects.all())
    projects = serializers.SlugRelatedField(slug_field="slug", queryset=Project.objects.all(), many=True, allow_empty=False)
    pair_filter = serializers.DictField(
        default=dict,
        help_text="sources ([human, import]), exclude_flagged, min_agreement (0-1), created_from / created_to (YYYY-MM-DD), eval_fraction",
    )
    settings = serializers.DictField(default=dict, help_text="Training settings; see the README (Training). Missing ones take their defaults.")

    def validate_projects(self, projects):
        return list(dict.fromkeys(projects))

    def validate(self, attrs):
        # The service validates these again; checking here puts each message under "settings" or "pair_filter", so a
        # client can tell a bad setting from a bad top-level field.
        errors = {}
        settings_errors = _settings_errors(attrs["kind"], attrs["settings"])
        if settings_errors:
            errors["settings"] = settings_errors
        filter_errors = _pair_filter_errors(attrs["pair_filter"])
        if filter_errors:
            errors["pair_filter"] = filter_errors
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


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
    requested_by = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField()
    training_started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField()

    def get_projects(self, run) -> list[str]:
        return sorted(project.slug for project in run.projects.all())

    def get_progress(self, run) -> dict:
        return selectors.run_progress(run).as_dict()

    def get_model_version(self, run) -> str | None:
        version = getattr(run, "model_version", None)  # reverse one-to-one: missing until the run succeeds
        return version.name if version else None

    def get_requested_by(self, run) -> str | None:
        return run.requested_by.username if run.requested_by else None


class TrainingMetricSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrainingMetric
        fields = ["step", "split", "name", "value"]


# --- scoring jobs and the queue order -----------------------------------------------------------------------------


class ScoringJobCreateSerializer(serializers.Serializer):
    project = serializers.SlugRelatedField(slug_field="slug", queryset=Project.objects.all())
    reward_version = serializers.SlugRelatedField(slug_field="name", queryset=ModelVersion.objects.all())


class ScoringJobSerializer(serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug")
    reward_version = serializers.CharField(source="reward_version.name")
    progress = serializers.SerializerMethodField()

    class Meta:
        model = ScoringJob
        fields = [
            "id", "project", "reward_version", "status", "candidates_total", "candidates_done", "progress",
            "cancel_requested", "error", "created_at", "started_at", "finished_at",
        ]

    def get_progress(self, job) -> dict:
        end = job.finished_at or timezone.now()
        elapsed = (end - job.started_at).total_seconds() if job.started_at else 0.0
        percent = int(100 * job.candidates_done / job.candidates_total) if job.candidates_total else 0
        return {"percent": percent, "elapsed_seconds": round(elapsed, 1)}


class ScoringJobDetailSerializer(ScoringJobSerializer):
    """A job plus its reward model's accuracy on the project (left out of lists: it reads every pair of the project)."""

    accuracy = serializers.SerializerMethodField()

    class Meta(ScoringJobSerializer.Meta):
        fields = [*ScoringJobSerializer.Meta.fields, "accuracy"]

    def get_accuracy(self, job) -> dict:
        return selectors.reward_accuracy(job.reward_version, job.project)


class QueueOrderSerializer(serializers.Serializer):
    order = serializers.ChoiceField(choices=Project.QueueOrder.values)
    reward_version = serializers.SlugRelatedField(
        slug_field="name", queryset=ModelVersion.objects.all(), required=False, allow_null=True
    )
