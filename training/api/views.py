from django.shortcuts import get_object_or_404
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.models import Project
from config.api import CanExplore, IsAdmin
from generation.models import ModelVersion
from training import scoring, selectors, services
from training.api.serializers import (
    QueueOrderSerializer, ScoringJobCreateSerializer, ScoringJobSerializer, TrainingMetricSerializer,
    TrainingRunCreateSerializer, TrainingRunSerializer,
)
from training.models import ScoringJob, TrainingMetric, TrainingRun


class TrainingRunList(generics.ListAPIView):
    """Training runs: researchers and admins read; admins launch (POST)."""

    serializer_class = TrainingRunSerializer
    permission_classes = [CanExplore]

    def get_queryset(self):
        runs = selectors.runs_with_versions().order_by("-created_at")
        for name in ("status", "kind"):
            if self.request.query_params.get(name):
                runs = runs.filter(**{name: self.request.query_params[name]})
        return runs

    def post(self, request):
        data = TrainingRunCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        run = services.training_run_create(
            kind=values["kind"],
            base_version=values["base_version"],
            projects=values["projects"],
            pair_filter=values["pair_filter"],
            settings=values["settings"],
            requested_by=request.user,
        )
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_201_CREATED)


class TrainingRunDetail(generics.RetrieveAPIView):
    """One run with its progress, settings, dataset manifest and, once it succeeded, the model version it made."""

    serializer_class = TrainingRunSerializer
    permission_classes = [CanExplore]

    def get_queryset(self):
        return selectors.runs_with_versions()


class TrainingRunCancel(APIView):
    """Cancel a queued run, or stop a running one at the end of its current step (admins)."""

    permission_classes = [IsAdmin]

    def post(self, request, pk):
        run = services.training_run_cancel(run=get_object_or_404(TrainingRun, pk=pk))
        return Response(TrainingRunSerializer(run).data)


class TrainingRunMetrics(generics.ListAPIView):
    """A run's logged metrics, in step order. Filters: ``split``, ``name``, ``after_step`` (poll for new ones)."""

    serializer_class = TrainingMetricSerializer
    permission_classes = [CanExplore]
    pagination_class = None

    def get_queryset(self):
        metrics = TrainingMetric.objects.filter(run=get_object_or_404(TrainingRun, pk=self.kwargs["pk"])).order_by("step", "id")
        params = self.request.query_params
        if params.get("split"):
            metrics = metrics.filter(split=params["split"])
        if params.get("name"):
            metrics = metrics.filter(name=params["name"])
        if params.get("after_step"):
            if not params["after_step"].isdigit():
                raise serializers.ValidationError({"after_step": "A whole number."})
            metrics = metrics.filter(step__gt=int(params["after_step"]))
        return metrics


class ScoringJobList(generics.ListAPIView):
    """Scoring jobs: researchers and admins read; admins start one (POST ``project``, ``reward_version``)."""

    serializer_class = ScoringJobSerializer
    permission_classes = [CanExplore]
    queryset = ScoringJob.objects.select_related("project", "reward_version").order_by("-created_at")

    def post(self, request):
        data = ScoringJobCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = scoring.scoring_job_create(requested_by=request.user, **data.validated_data)
        return Response(ScoringJobSerializer(job).data, status=status.HTTP_201_CREATED)


class ScoringJobDetail(generics.RetrieveAPIView):
    """A scoring job with its progress and the reward model's accuracy on the project's held-out human pairs."""

    serializer_class = ScoringJobSerializer
    permission_classes = [CanExplore]
    queryset = ScoringJob.objects.select_related("project", "reward_version")


class ScoringJobCancel(APIView):
    permission_classes = [IsAdmin]

    def post(self, request, pk):
        job = scoring.scoring_job_cancel(job=get_object_or_404(ScoringJob, pk=pk))
        return Response(ScoringJobSerializer(job).data)


class QueueOrder(APIView):
    """How the project's labeling queue is ordered: researchers and admins read; admins change it."""

    permission_classes = [CanExplore]

    def get(self, request, slug):
        return Response(_queue_order(get_object_or_404(Project, slug=slug)))

    def post(self, request, slug):
        project = get_object_or_404(Project, slug=slug)
        data = QueueOrderSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        scoring.project_queue_order_set(
            project=project, order=data.validated_data["order"], reward_version=data.validated_data.get("reward_version")
        )
        return Response(_queue_order(project))


def _queue_order(project: Project) -> dict:
    version = project.queue_reward_version
    return {"order": project.queue_order, "reward_version": version.name if version else None}


class RewardAccuracy(APIView):
    """``?model=<reward version>``: how often it scores the chosen response above the rejected one on the
    project's human pairs it did not train on."""

    permission_classes = [CanExplore]

    def get(self, request, slug):
        project = get_object_or_404(Project, slug=slug)
        version = ModelVersion.objects.filter(name=request.query_params.get("model", ""), kind=ModelVersion.Kind.REWARD).first()
        if version is None:
            raise serializers.ValidationError({"model": "Give the name of a reward model version."})
        return Response({"project": project.slug, "reward_version": version.name, **selectors.reward_accuracy(version, project)})
