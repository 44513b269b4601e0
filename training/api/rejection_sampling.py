"""The rejection-sampling API: launch, follow, cancel and read jobs, their reward matrix page by page, and the
one-step SFT run on a job's selection. Researchers and admins read; only admins launch, cancel or train. Labelers
get 403. The service refuses what it cannot do with a ValidationError, which config.api turns into a 400."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.jobs import JOB_STATE_FIELDS, JobProgressSerializer, JobStateSerializer
from annotation.models import Project
from annotation.roles import CanExplore, IsAdmin
from config.api import MAX_ID, error_responses
from config.job_queue import job_progress
from config.jobs import job_cancel
from generation.api.serializers import SamplingField
from generation.jobs import MAX_SELECTED_IDS
from generation.models import GenerationJob, ModelVersion
from training import rejection_sampling as service
from training.api.serializers import TrainingRunSerializer, TrainingSettingsField
from training.models import RejectionSamplingJob

POLICY = ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY)
REWARD = ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD)
PROMPTS_PER_PAGE = 10


class RejectionPromptsSerializer(serializers.Serializer):
    MODES = [("train", "The project's train split"), ("ids", "The prompts listed in ids")]

    mode = serializers.ChoiceField(choices=MODES, default="train")
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID), required=False, max_length=MAX_SELECTED_IDS,
        help_text="Prompt ids of the project, for mode ids.",
    )

    def validate(self, attrs):
        """Stored with the job: only what its mode uses."""
        return {key: value for key, value in attrs.items() if key in ("mode", attrs["mode"])}


@extend_schema_field(RejectionPromptsSerializer)
class RejectionPromptsField(serializers.DictField):
    """A stored prompt selection, shown as it was saved."""


class RejectionSamplingCreateSerializer(serializers.Serializer):
    project = serializers.SlugField(help_text="The project's slug (404 when there is no such project).")
    policy = serializers.SlugRelatedField(slug_field="name", queryset=POLICY, help_text="The policy version that generates.")
    judge = serializers.SlugRelatedField(slug_field="name", queryset=REWARD, help_text="The reward version that scores every response.")
    n = serializers.IntegerField(min_value=service.MIN_N, max_value=service.MAX_N, default=8, help_text="Responses per prompt.")
    selection = serializers.ChoiceField(choices=RejectionSamplingJob.Selection.choices, default=RejectionSamplingJob.Selection.BEST_OF_N)
    k = serializers.IntegerField(
        min_value=1, max_value=service.MAX_RESPONSES, default=1,
        help_text="How many to keep: per prompt (top-k-per-prompt, at most n) or over all prompts (top-k-overall); 1 for best-of-n.",
    )
    prompts = RejectionPromptsSerializer(required=False, help_text="Which prompts (default: the project's train split).")
    sampling = SamplingField(default=dict, help_text="Sampling settings; the temperature must be above 0.")
    backend = serializers.ChoiceField(choices=GenerationJob.Backend.choices, default="auto")
    make_pairs = serializers.BooleanField(
        default=False, help_text="Also record each prompt's best over its worst response as a preference pair of source judge.",
    )


class RejectionSamplingSerializer(JobStateSerializer, serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug")
    policy = serializers.CharField(source="policy.name")
    judge = serializers.CharField(source="judge.name")
    prompt_selection = RejectionPromptsField()
    sampling = SamplingField()
    progress = serializers.SerializerMethodField()

    class Meta:
        model = RejectionSamplingJob
        fields = [
            "id", "project", "policy", "judge", "n", "selection", "k", "make_pairs", "prompt_selection", "sampling",
            "backend", "status", "phase", "prompts_total", "work_total", "work_done", "progress", "selected_count",
            "pairs_created", "cancel_requested", "error", "created_at", "started_at", "finished_at", *JOB_STATE_FIELDS,
        ]

    @extend_schema_field(JobProgressSerializer)
    def get_progress(self, job) -> dict:
        return job_progress(job).as_dict()


class HistogramSerializer(serializers.Serializer):
    edges = serializers.ListField(child=serializers.FloatField(), help_text="Bin edges, lowest score to highest (bins + 1).")
    counts = serializers.ListField(child=serializers.IntegerField(), help_text="Responses per bin.")
    selected = serializers.ListField(child=serializers.IntegerField(), help_text="Selected responses per bin.")


class DistributionSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    mean = serializers.FloatField(allow_null=True)
    std = serializers.FloatField(allow_null=True, help_text="Population standard deviation.")
    min = serializers.FloatField(allow_null=True)
    max = serializers.FloatField(allow_null=True)


class ScoresSerializer(DistributionSerializer):
    histogram = HistogramSerializer()


class SpreadSerializer(DistributionSerializer):
    median = serializers.FloatField(allow_null=True)


class SelectedScoresSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    mean = serializers.FloatField(allow_null=True)
    min = serializers.FloatField(allow_null=True)
    max = serializers.FloatField(allow_null=True)


class RejectionResultsSerializer(serializers.Serializer):
    scores = ScoresSerializer(help_text="Every response's score.")
    per_prompt_spread = SpreadSerializer(help_text="Per prompt, its highest score minus its lowest.")
    selected = SelectedScoresSerializer(help_text="The selected responses' scores.")
    gain = serializers.FloatField(allow_null=True, help_text="Mean selected score minus the mean of all.")


class RejectionSamplingDetailSerializer(RejectionSamplingSerializer):
    """A job with its figures (once it has succeeded) and the demonstration filter naming its selection."""

    results = serializers.SerializerMethodField()
    demonstration_filter = serializers.SerializerMethodField()

    class Meta(RejectionSamplingSerializer.Meta):
        fields = [*RejectionSamplingSerializer.Meta.fields, "results", "demonstration_filter"]

    @extend_schema_field(RejectionResultsSerializer(allow_null=True))
    def get_results(self, job) -> dict | None:
        return job.results or None

    def get_demonstration_filter(self, job) -> dict:
        """The demonstration filter of exactly this job's selection (for an SFT export or run)."""
        return service.sft_pair_filter(job)


class RejectionSampleSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    sample = serializers.IntegerField(help_text="Sample number within its prompt, from 0.")
    text = serializers.CharField(allow_blank=True)
    score = serializers.FloatField(allow_null=True, help_text="The judge's score (null until scored).")
    selected = serializers.BooleanField()
    demonstration = serializers.IntegerField(source="demonstration_id", allow_null=True, help_text="The demonstration it became.")
    num_tokens = serializers.IntegerField()
    finish_reason = serializers.CharField(allow_blank=True)


class RejectionMatrixRowSerializer(serializers.Serializer):
    prompt = serializers.IntegerField(help_text="The prompt's id.")
    messages = serializers.ListField(child=serializers.DictField(child=serializers.CharField()))
    spread = serializers.FloatField(allow_null=True, help_text="Its highest score minus its lowest.")
    samples = RejectionSampleSerializer(many=True, help_text="Every response, by sample number.")


class PromptsPage(PageNumberPagination):
    page_size = PROMPTS_PER_PAGE


def _jobs():
    return RejectionSamplingJob.objects.select_related("project", "policy", "judge")


@extend_schema_view(
    get=extend_schema(
        parameters=[OpenApiParameter("project", str, description="Only jobs of this project (slug).")],
        responses={200: RejectionSamplingSerializer(many=True), **error_responses(400, 404)},
    ),
    post=extend_schema(
        request=RejectionSamplingCreateSerializer, responses={201: RejectionSamplingSerializer, **error_responses(400, 404)}
    ),
)
class RejectionSamplingList(generics.ListAPIView):
    """Rejection-sampling jobs, newest first. POST: admins launch one on the GPU queue (201)."""

    serializer_class = RejectionSamplingSerializer
    permission_classes = [CanExplore]

    def get_queryset(self):
        rows = _jobs().order_by("-created_at")
        if self.request.query_params.get("project"):
            rows = rows.filter(project__slug=self.request.query_params["project"])
        return rows

    def post(self, request):
        data = RejectionSamplingCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        job = service.rejection_sampling_create(
            project=get_object_or_404(Project, slug=values["project"]),
            policy=values["policy"],
            judge=values["judge"],
            n=values["n"],
            selection=values["selection"],
            k=values["k"],
            prompt_selection=values.get("prompts") or {"mode": "train"},
            sampling=values["sampling"],
            backend=values["backend"],
            make_pairs=values["make_pairs"],
            requested_by=request.user,
        )
        return Response(RejectionSamplingSerializer(job).data, status=status.HTTP_201_CREATED)


@extend_schema_view(get=extend_schema(responses={200: RejectionSamplingDetailSerializer, **error_responses(404)}))
class RejectionSamplingDetail(generics.RetrieveAPIView):
    serializer_class = RejectionSamplingDetailSerializer
    permission_classes = [CanExplore]

    def get_queryset(self):
        return _jobs()


class RejectionSamplingCancel(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses={200: RejectionSamplingSerializer, **error_responses(400, 404)})
    def post(self, request, pk):
        return Response(RejectionSamplingSerializer(job_cancel(job=get_object_or_404(_jobs(), pk=pk))).data)


@extend_schema_view(get=extend_schema(responses={200: RejectionMatrixRowSerializer(many=True), **error_responses(404)}))
class RejectionSamplingSamples(generics.ListAPIView):
    """The job's reward matrix, a page of prompts at a time (in prompt id order): each prompt with every response,
    its score and whether it was selected. A page past the end is a 404."""

    serializer_class = RejectionMatrixRowSerializer
    permission_classes = [CanExplore]
    pagination_class = PromptsPage

    def list(self, request, pk):
        job = get_object_or_404(RejectionSamplingJob, pk=pk)
        page = self.paginate_queryset(service.matrix_prompt_ids(job))
        return self.get_paginated_response(self.get_serializer(service.matrix_rows(job, page), many=True).data)


class TrainSerializer(serializers.Serializer):
    settings = TrainingSettingsField(
        default=dict, help_text="SFT training settings; see the README (Training). Missing ones take their defaults.",
    )
    eval_fraction = serializers.FloatField(
        required=False, min_value=0, max_value=0.9, help_text="Share of the selection's prompts held out for evaluation "
        "when none is marked held out (default 0.1; 0: train on everything; below 0.9).",
    )


class RejectionSamplingTrain(APIView):
    """Admins launch an SFT run of the job's policy on its selection, in one step (201 with the run)."""

    permission_classes = [IsAdmin]

    @extend_schema(request=TrainSerializer, responses={201: TrainingRunSerializer, **error_responses(400, 404)})
    def post(self, request, pk):
        job = get_object_or_404(_jobs(), pk=pk)
        data = TrainSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        run = service.rejection_sampling_train(
            job=job, settings=values["settings"], eval_fraction=values.get("eval_fraction"), requested_by=request.user
        )
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_201_CREATED)
