"""The evaluation API: launch, follow, cancel and read evaluations, send blind comparisons to labelers, and a
project's leaderboard. Researchers and admins read; only admins launch, cancel or send. Labelers get 403."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.jobs import JOB_STATE_FIELDS, JobProgressSerializer, JobStateSerializer
from annotation.models import Project
from annotation.roles import CanExplore, IsAdmin
from config.api import MAX_ID, error_responses
from config.job_queue import job_progress
from config.jobs import job_cancel
from generation.api.serializers import PromptSelectionField, SamplingField
from generation.jobs import MAX_SELECTED_IDS
from generation.models import GenerationJob, ModelVersion
from training import evaluation as evaluations
from training.models import Evaluation

POLICY = ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY)
REWARD = ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD)


class EvaluationPromptsSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(
        choices=[("heldout", "The project's held-out split"), ("ids", "The prompts listed in ids"), ("typed", "Prompts typed in")],
        default="heldout",
    )
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID), required=False, max_length=MAX_SELECTED_IDS,
        help_text="Prompt ids of the project, for mode ids.",
    )
    typed = serializers.ListField(
        child=serializers.CharField(max_length=evaluations.MAX_TYPED_CHARS, trim_whitespace=False), required=False,
        max_length=evaluations.MAX_TYPED_PROMPTS, help_text="Prompt texts (one user turn each), for mode typed.",
    )

    def validate(self, attrs):
        """Stored with the evaluation: only what its mode uses."""
        return {key: value for key, value in attrs.items() if key in ("mode", attrs["mode"])}


class EvaluationCreateSerializer(serializers.Serializer):
    project = serializers.SlugField(help_text="The project's slug (404 when there is no such project).")
    models = serializers.ListField(
        child=serializers.SlugRelatedField(slug_field="name", queryset=POLICY), min_length=evaluations.MIN_VERSIONS,
        max_length=evaluations.MAX_VERSIONS, help_text="2 to 4 policy versions (names), in column order.",
    )
    judge = serializers.SlugRelatedField(
        slug_field="name", queryset=REWARD, required=False, allow_null=True,
        help_text="A reward version that scores every response (none: a side-by-side without figures).",
    )
    prompts = EvaluationPromptsSerializer(required=False, help_text="Which prompts (default: the held-out split).")
    samples = serializers.IntegerField(min_value=1, max_value=evaluations.MAX_SAMPLES, default=1, help_text="Responses per prompt and version.")
    sampling = SamplingField(default=dict)
    backend = serializers.ChoiceField(choices=GenerationJob.Backend.choices, default="auto")
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class EstimateSerializer(serializers.Serializer):
    value = serializers.FloatField(allow_null=True)
    low = serializers.FloatField(allow_null=True, help_text="95% interval, low end.")
    high = serializers.FloatField(allow_null=True)
    count = serializers.IntegerField(help_text="Units behind it: prompts for win rates and means, comparisons for ratings.")


class VersionFiguresSerializer(serializers.Serializer):
    name = serializers.CharField()
    mean_reward = EstimateSerializer()
    mean_length = EstimateSerializer(help_text="In tokens.")


class JudgePairSerializer(serializers.Serializer):
    a = serializers.CharField()
    b = serializers.CharField()
    win_rate = EstimateSerializer(help_text="a's judge win rate over b, ties counted half.")
    win_rate_length_matched = EstimateSerializer(help_text="The same, over responses whose lengths are within 10%.")
    wins = serializers.IntegerField()
    ties = serializers.IntegerField()
    losses = serializers.IntegerField()


class JudgeResultsSerializer(serializers.Serializer):
    versions = VersionFiguresSerializer(many=True)
    pairs = JudgePairSerializer(many=True)


class HumanPairSerializer(serializers.Serializer):
    a = serializers.CharField()
    b = serializers.CharField()
    sent = serializers.IntegerField(help_text="Comparisons sent to labelers.")
    verdicts = serializers.IntegerField(help_text="Rankings received.")
    win_rate = EstimateSerializer(help_text="a's human win rate over b, ties counted half.")
    agreement = EstimateSerializer(help_text="Share of decided comparisons where the judge preferred the same response.")


class HumanResultsSerializer(serializers.Serializer):
    pairs = HumanPairSerializer(many=True)


class EvaluationSerializer(JobStateSerializer, serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug")
    models = serializers.SerializerMethodField()
    judge = serializers.CharField(source="judge.name", allow_null=True, default=None)
    prompt_selection = PromptSelectionField()
    sampling = SamplingField()
    prompts_total = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()

    class Meta:
        model = Evaluation
        fields = [
            "id", "name", "project", "models", "judge", "prompt_selection", "samples", "sampling", "backend", "status",
            "phase", "prompts_total", "work_total", "work_done", "progress", "cancel_requested", "error", "created_at",
            "started_at", "finished_at", *JOB_STATE_FIELDS,
        ]

    def get_models(self, evaluation) -> list[str]:
        return [entry.model_version.name for entry in evaluation.entries.all()]

    def get_prompts_total(self, evaluation) -> int:
        return evaluation.prompts.count()

    @extend_schema_field(JobProgressSerializer)
    def get_progress(self, evaluation) -> dict:
        return job_progress(evaluation).as_dict()


class EvaluationDetailSerializer(EvaluationSerializer):
    """An evaluation with the judge's figures (once it has ended) and the labelers' (as they rank)."""

    judge_results = serializers.SerializerMethodField()
    human_results = serializers.SerializerMethodField()

    class Meta(EvaluationSerializer.Meta):
        fields = [*EvaluationSerializer.Meta.fields, "judge_results", "human_results"]

    @extend_schema_field(JudgeResultsSerializer(allow_null=True))
    def get_judge_results(self, evaluation) -> dict | None:
        return evaluation.results or None

    @extend_schema_field(HumanResultsSerializer)
    def get_human_results(self, evaluation) -> dict:
        return evaluations.human_results(evaluation)


def _evaluations():
    return Evaluation.objects.select_related("project", "judge").prefetch_related("entries__model_version")


@extend_schema_view(
    get=extend_schema(
        parameters=[OpenApiParameter("project", str, description="Only evaluations of this project (slug).")],
        responses={200: EvaluationSerializer(many=True), **error_responses(400, 404)},
    ),
    post=extend_schema(request=EvaluationCreateSerializer, responses={201: EvaluationSerializer, **error_responses(400, 404)}),
)
class EvaluationList(generics.ListAPIView):
    """Evaluations, newest first. POST: admins launch one on the GPU queue (201)."""

    serializer_class = EvaluationSerializer
    permission_classes = [CanExplore]

    def get_queryset(self):
        rows = _evaluations().order_by("-created_at")
        if self.request.query_params.get("project"):
            rows = rows.filter(project__slug=self.request.query_params["project"])
        return rows

    def post(self, request):
        data = EvaluationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        evaluation = evaluations.evaluation_create(
            project=get_object_or_404(Project, slug=values["project"]),
            versions=values["models"],
            judge=values.get("judge"),
            prompt_selection=values.get("prompts") or {"mode": "heldout"},
            samples=values["samples"],
            sampling=values["sampling"],
            backend=values["backend"],
            name=values["name"],
            requested_by=request.user,
        )
        return Response(EvaluationSerializer(evaluation).data, status=status.HTTP_201_CREATED)


@extend_schema_view(get=extend_schema(responses={200: EvaluationDetailSerializer, **error_responses(404)}))
class EvaluationDetail(generics.RetrieveAPIView):
    serializer_class = EvaluationDetailSerializer
    permission_classes = [CanExplore]

    def get_queryset(self):
        return _evaluations()


class EvaluationCancel(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses={200: EvaluationSerializer, **error_responses(400, 404)})
    def post(self, request, pk):
        return Response(EvaluationSerializer(job_cancel(job=get_object_or_404(Evaluation, pk=pk))).data)


class SendSerializer(serializers.Serializer):
    project = serializers.SlugField(help_text="A project with K = 2 whose labelers get the comparisons.")
    a = serializers.SlugRelatedField(slug_field="name", queryset=POLICY, help_text="One version of the evaluation.")
    b = serializers.SlugRelatedField(slug_field="name", queryset=POLICY, help_text="Another.")
    limit = serializers.IntegerField(
        min_value=1, max_value=evaluations.MAX_SEND, required=False,
        help_text=f"At most this many pairs (default {evaluations.MAX_SEND:,}; send again for more: pairs sent before are skipped).",
    )


class SentSerializer(serializers.Serializer):
    sent = serializers.IntegerField(help_text="New K=2 items put in the project's queue.")
    identical = serializers.IntegerField(help_text="Pairs not sent: the two responses were the same text (a tie).")
    already = serializers.IntegerField(help_text="Pairs sent before.")


class EvaluationSend(APIView):
    """Send pairs of two versions' responses to a K=2 project's labelers as blind comparisons (admins)."""

    permission_classes = [IsAdmin]

    @extend_schema(request=SendSerializer, responses={200: SentSerializer, **error_responses(400, 404)})
    def post(self, request, pk):
        evaluation = get_object_or_404(Evaluation, pk=pk)
        data = SendSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        sent = evaluations.evaluation_send_to_labelers(
            evaluation=evaluation, project=get_object_or_404(Project, slug=values["project"]),
            version_a=values["a"], version_b=values["b"], limit=values.get("limit"),
        )
        return Response(SentSerializer(sent).data)


class RatingSerializer(serializers.Serializer):
    rating = EstimateSerializer(help_text="Bradley–Terry rating on the Elo scale (mean 1000), 95% bootstrap interval; count = comparisons.")
    wins = serializers.IntegerField()
    ties = serializers.IntegerField()
    losses = serializers.IntegerField()


class LeaderboardRowSerializer(serializers.Serializer):
    version = serializers.CharField(source="version.name")
    parent = serializers.CharField(source="version.parent.name", allow_null=True, default=None)
    training_run = serializers.IntegerField(source="version.training_run_id", allow_null=True)
    human = RatingSerializer(allow_null=True, help_text="From blind human comparisons.")
    judge = RatingSerializer(allow_null=True, help_text="From judge comparisons.")
    heldout_accuracy = EstimateSerializer(allow_null=True, help_text="The run's held-out preference accuracy (Wilson interval; count = pairs).")


class Leaderboard(APIView):
    """Every policy version evaluated in the project, best first (researchers and admins)."""

    permission_classes = [CanExplore]

    @extend_schema(responses={200: LeaderboardRowSerializer(many=True), **error_responses(404)})
    def get(self, request, slug):
        rows = evaluations.leaderboard(get_object_or_404(Project, slug=slug))
        return Response(LeaderboardRowSerializer(rows, many=True).data)
