"""The training API: runs (launch, follow, cancel, metrics), scoring jobs, the queue order and reward accuracy.

Researchers and admins read everything here; only admins launch, cancel or change anything. Labelers get 403.
The services refuse what they cannot do with a ValidationError, which config.api turns into a 400.
"""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.roles import CanExplore, IsAdmin
from annotation.models import Project
from config.jobs import job_cancel
from config.api import error_responses, int64
from generation.models import ModelVersion
from training import scoring, selectors, services
from training.api.serializers import (
    QueueOrderSerializer,
    RewardAccuracySerializer,
    ScoringJobCreateSerializer,
    ScoringJobDetailSerializer,
    ScoringJobSerializer,
    TrainingMetricSerializer,
    TrainingSampleSerializer,
    TrainingRunCheckSerializer,
    TrainingRunCreateSerializer,
    TrainingRunSerializer,
)
from training.models import ScoringJob, TrainingMetric, TrainingRun, TrainingSample

# --- training runs ---------------------------------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=TrainingRun.Status.values, description="Only runs in this status."),
            OpenApiParameter("kind", str, enum=TrainingRun.Kind.values, description="Only runs of this kind."),
            OpenApiParameter("project", str, description="Only runs that train on this project (slug)."),
        ],
        responses={200: TrainingRunSerializer(many=True), **error_responses(400, 404)},
    ),
    post=extend_schema(request=TrainingRunCreateSerializer, responses={201: TrainingRunSerializer, **error_responses(400)}),
)
class TrainingRunList(generics.ListAPIView):
    """Training runs, newest first (filters: ``status``, ``kind``, ``project`` slug).

    GET: researchers and admins. POST ``{kind, base_version, projects, pair_filter, settings}``: admins launch a run
    on the GPU queue (201 with the run); an SFT run (``kind: "sft"``) takes ``demonstration_filter`` instead of
    ``pair_filter`` and trains on demonstrations; a GRPO or RLOO run takes ``prompt_selection`` and
    ``reward_version`` and trains on the policy's own completions, scored by that reward model.
    """

    serializer_class = TrainingRunSerializer
    permission_classes = [CanExplore]

    def get_queryset(self):
        runs = selectors.runs_with_versions().order_by("-created_at")
        params = self.request.query_params
        for name in ("status", "kind"):
            if params.get(name):
                runs = runs.filter(**{name: params[name]})
        if params.get("project"):
            runs = runs.filter(projects__slug=params["project"])
        return runs

    def post(self, request):
        data = TrainingRunCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        run = services.training_run_create(
            kind=values["kind"],
            base_version=values["base_version"],
            projects=values["projects"],
            pair_filter=TrainingRunCreateSerializer.selection(values),
            settings=values["settings"],
            reward_version=values["reward_version"],
            requested_by=request.user,
        )
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_201_CREATED)


class TrainingRunCheck(APIView):
    """Admins: what a launch with this body (as for POST /api/training-runs/) would train on, without queueing it:
    the selected train / eval pairs (an SFT run's demonstrations, with their sources), how many fit ``max_length``
    (tokenized with the base's chat template), their lengths, the max length that keeps them all, and whether the
    launch would be refused for too few pairs (and why). A body that is invalid outright is a 400, as for a launch."""

    permission_classes = [IsAdmin]

    @extend_schema(request=TrainingRunCreateSerializer, responses={200: TrainingRunCheckSerializer, **error_responses(400)})
    def post(self, request):
        data = TrainingRunCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        check = services.training_run_check(
            kind=values["kind"], base_version=values["base_version"], projects=values["projects"],
            pair_filter=TrainingRunCreateSerializer.selection(values), settings=values["settings"],
            reward_version=values["reward_version"],
        )
        return Response(check.as_dict())


@extend_schema_view(get=extend_schema(responses={200: TrainingRunSerializer, **error_responses(404)}))
class TrainingRunDetail(generics.RetrieveAPIView):
    """One run with its progress, settings, dataset manifest and, once it succeeded, the model version it made.
    Researchers and admins."""

    serializer_class = TrainingRunSerializer
    permission_classes = [CanExplore]

    def get_queryset(self):
        return selectors.runs_with_versions()


class TrainingRunCancel(APIView):
    """Admins: cancel a queued run at once, or stop a running one at the end of its current step. A finished run
    is a 400."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses={200: TrainingRunSerializer, **error_responses(400, 404)})
    def post(self, request, pk):
        run = job_cancel(job=get_object_or_404(TrainingRun, pk=pk))
        return Response(TrainingRunSerializer(selectors.runs_with_versions().get(pk=run.pk)).data)


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter("split", str, enum=TrainingMetric.Split.values, description="Only this split's rows."),
            OpenApiParameter("name", str, description="Only this metric (e.g. loss)."),
            OpenApiParameter("after_step", {"type": "integer", "minimum": 0}, description="Only rows of later steps."),
        ],
        responses={200: TrainingMetricSerializer(many=True), **error_responses(400, 404)},
    )
)
class TrainingRunMetrics(generics.ListAPIView):
    """A run's logged metrics as ``{step, split, name, value}`` rows in step order, unpaginated. Researchers and admins.
    Filters: ``split`` (train or eval), ``name``, ``after_step`` (only later steps: poll for new rows)."""

    serializer_class = TrainingMetricSerializer
    permission_classes = [CanExplore]
    pagination_class = None

    def get_queryset(self):
        run = get_object_or_404(TrainingRun, pk=self.kwargs["pk"])
        metrics = TrainingMetric.objects.filter(run=run).order_by("step", "id")
        params = self.request.query_params
        if params.get("split"):
            if params["split"] not in TrainingMetric.Split.values:
                raise serializers.ValidationError({"split": f"Choose {' or '.join(TrainingMetric.Split.values)}."})
            metrics = metrics.filter(split=params["split"])
        if params.get("name"):
            metrics = metrics.filter(name=params["name"])
        return after_step(metrics, params)


@extend_schema_view(
    get=extend_schema(
        parameters=[OpenApiParameter("after_step", {"type": "integer", "minimum": 0}, description="Only samples of later steps.")],
        responses={200: TrainingSampleSerializer(many=True), **error_responses(400, 404)},
    )
)
class TrainingRunSamples(generics.ListAPIView):
    """Admins: a GRPO or RLOO run's sample completions, newest step first: at each logged step the two best and the
    two worst completions of the batch, with the reward model's score, the length penalty and their weighted sum.
    Filter ``after_step`` (poll for new rows). Another kind of run has none (an empty list)."""

    serializer_class = TrainingSampleSerializer
    permission_classes = [IsAdmin]

    def get_queryset(self):
        run = get_object_or_404(TrainingRun, pk=self.kwargs["pk"])
        return after_step(TrainingSample.objects.filter(run=run).order_by("-step", "-reward", "id"), self.request.query_params)


def after_step(rows, params):
    """Only the rows of steps after the ``after_step`` parameter, when given (a client polling for new rows)."""
    value = params.get("after_step")
    if not value:
        return rows
    if not value.isdecimal():
        raise serializers.ValidationError({"after_step": "Give a whole number."})
    step = int64(value)  # None: past any step a run can log
    return rows.filter(step__gt=step) if step is not None else rows.none()


# --- scoring jobs --------------------------------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        parameters=[OpenApiParameter("project", str, description="Only jobs of this project (slug).")],
        responses={200: ScoringJobSerializer(many=True), **error_responses(400, 404)},
    ),
    post=extend_schema(request=ScoringJobCreateSerializer, responses={201: ScoringJobDetailSerializer, **error_responses(400)}),
)
class ScoringJobList(generics.ListAPIView):
    """Scoring jobs, newest first (filter: ``project`` slug).

    GET: researchers and admins. POST ``{project, reward_version}``: admins score every candidate of the project with
    that reward model on the GPU queue (201 with the job).
    """

    serializer_class = ScoringJobSerializer
    permission_classes = [CanExplore]

    def get_queryset(self):
        jobs = ScoringJob.objects.select_related("project", "reward_version").order_by("-created_at")
        if self.request.query_params.get("project"):
            jobs = jobs.filter(project__slug=self.request.query_params["project"])
        return jobs

    def post(self, request):
        data = ScoringJobCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = scoring.scoring_job_create(requested_by=request.user, **data.validated_data)
        return Response(ScoringJobDetailSerializer(job).data, status=status.HTTP_201_CREATED)


@extend_schema_view(get=extend_schema(responses={200: ScoringJobDetailSerializer, **error_responses(404)}))
class ScoringJobDetail(generics.RetrieveAPIView):
    """A scoring job with its progress and the reward model's accuracy on the project's human pairs it did not train
    on. Researchers and admins."""

    serializer_class = ScoringJobDetailSerializer
    permission_classes = [CanExplore]
    queryset = ScoringJob.objects.select_related("project", "reward_version")


class ScoringJobCancel(APIView):
    """Admins: cancel a queued job at once, or stop a running one after its current batch (the scores saved so far
    are kept). A finished job is a 400."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses={200: ScoringJobDetailSerializer, **error_responses(400, 404)})
    def post(self, request, pk):
        job = job_cancel(job=get_object_or_404(ScoringJob, pk=pk))
        return Response(ScoringJobDetailSerializer(job).data)


# --- per project: queue order and reward accuracy -------------------------------------------------------------------


class QueueOrder(APIView):
    """How the project's labeling queue is ordered, ``{order, reward_version}``.

    GET: researchers and admins. POST ``{order: "fewest_rankings" | "reward_spread", reward_version: name | null}``:
    admins; ``reward_spread`` needs a reward model that has scored the project.
    """

    permission_classes = [CanExplore]

    @extend_schema(responses={200: QueueOrderSerializer, **error_responses(404)})
    def get(self, request, slug):
        return Response(_queue_order(get_object_or_404(Project, slug=slug)))

    @extend_schema(request=QueueOrderSerializer, responses={200: QueueOrderSerializer, **error_responses(400, 404)})
    def post(self, request, slug):
        project = get_object_or_404(Project, slug=slug)
        data = QueueOrderSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = scoring.project_queue_order_set(
            project=project, order=data.validated_data["order"], reward_version=data.validated_data.get("reward_version")
        )
        return Response(_queue_order(project))


def _queue_order(project: Project) -> dict:
    version = project.queue_reward_version
    return {"order": project.queue_order, "reward_version": version.name if version else None}


class RewardAccuracy(APIView):
    """``?model=<reward version name>``: how often that reward model scores the chosen response above the rejected
    one on the project's human pairs it did not train on. Researchers and admins."""

    permission_classes = [CanExplore]

    @extend_schema(
        parameters=[OpenApiParameter("model", str, required=True, description="A reward model version's name.")],
        responses={200: RewardAccuracySerializer, **error_responses(400, 404)},
    )
    def get(self, request, slug):
        project = get_object_or_404(Project, slug=slug)
        version = ModelVersion.objects.filter(name=request.query_params.get("model", ""), kind=ModelVersion.Kind.REWARD).first()
        if version is None:
            raise serializers.ValidationError({"model": "Give the name of a reward model version."})
        return Response({"project": project.slug, "reward_version": version.name, **selectors.reward_accuracy(version, project)})
