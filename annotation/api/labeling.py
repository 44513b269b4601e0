"""The labeling loop through the API: next item, rank, skip, flag, my rankings; progress and agreement for admins."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, extend_schema, extend_schema_field, extend_schema_view,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import demonstrating, labeling, selectors
from annotation.api.serializers import MessageSerializer, TiersField
from annotation.labeling import MAX_FLAG_NOTE, MAX_RATIONALE, MAX_SKIP_REASON
from annotation.models import ItemFlag, Project, Ranking
from annotation.roles import CanExplore, EXPLORE, IsAdmin, IsLabeler
from config.api import MAX_ID, error_responses, int64


@extend_schema_field({"type": "array", "items": {"type": "array", "items": {"type": "integer"}}})
class _IdTiersField(TiersField):
    """Stored tiers: candidate ids, best tier first."""


class RankingSerializer(serializers.ModelSerializer):
    """A ranking as researchers and admins read it: tiers of candidate ids."""

    tiers = _IdTiersField(read_only=True)
    pairs = serializers.SerializerMethodField()

    class Meta:
        model = Ranking
        fields = ["id", "item", "labeler", "tiers", "rationale", "time_spent_ms", "pairs", "created_at", "updated_at"]

    def get_pairs(self, ranking) -> int:
        return getattr(ranking, "pair_count", None) or ranking.pairs.count()


class OwnRankingSerializer(RankingSerializer):
    """A ranking as its labeler reads it: tiers of the letters they were shown, never candidate ids."""

    tiers = serializers.SerializerMethodField(help_text='Letters, best tier first: [["D"], ["C"], ["A", "B"]].')
    ranking = serializers.SerializerMethodField(help_text="The same as text: D > C > A = B.")

    class Meta(RankingSerializer.Meta):
        fields = ["id", "item", "labeler", "tiers", "ranking", "rationale", "time_spent_ms", "pairs", "created_at", "updated_at"]

    def get_tiers(self, ranking) -> list[list[str]]:
        return selectors.ranking_letters(ranking)

    def get_ranking(self, ranking) -> str:
        return selectors.ranking_as_text(ranking)


def _ranking_serializer(user):
    return RankingSerializer if user.has_perm(EXPLORE) else OwnRankingSerializer


_EITHER_RANKING = PolymorphicProxySerializer(
    component_name="RankingForRole",
    serializers=[OwnRankingSerializer, RankingSerializer],
    resource_type_field_name=None,
)


class SkipSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=MAX_SKIP_REASON)


class FlagSerializer(serializers.Serializer):
    reason = serializers.ChoiceField(choices=ItemFlag.Reason.choices)
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=MAX_FLAG_NOTE)


# --- shapes of the hand-checked bodies and hand-built responses, for the OpenAPI schema --------------------------


def _tiers_field(help_text: str) -> serializers.ListField:
    letter = serializers.RegexField(r"^[A-Z]$", help_text="A response's letter (`key` in the next item).")
    return serializers.ListField(child=serializers.ListField(child=letter, allow_empty=False), allow_empty=False, help_text=help_text)


class RankingInputSerializer(serializers.Serializer):
    """A ranking: checked by hand on the hot path (see ``_ranking_input``) and by the labeling service."""

    tiers = _tiers_field(
        'The letters shown, best tier first; responses tied share a tier: [["D"], ["C"], ["A", "B"]]. Every shown '
        "response exactly once. Response ids are refused (400)."
    )
    rationale = serializers.CharField(required=False, allow_blank=True, max_length=MAX_RATIONALE)
    time_spent_ms = serializers.IntegerField(
        required=False, allow_null=True, min_value=0,
        help_text="Time on the item as the client counted it (capped by the lease's age).",
    )


class RankingReviseSerializer(serializers.Serializer):
    tiers = _tiers_field("The new order: the letters shown, best tier first.")
    rationale = serializers.CharField(required=False, allow_blank=True, max_length=MAX_RATIONALE, help_text="Kept when left out.")


class ShownResponseSerializer(serializers.Serializer):
    key = serializers.CharField(
        help_text="A, B, C...: this response's name for you, in the order you see the responses (shuffled per labeler "
        "and item, so it says nothing about which model wrote it). Rank by these."
    )
    text = serializers.CharField(allow_blank=True)


class NextItemSerializer(serializers.Serializer):
    item = serializers.IntegerField()
    messages = MessageSerializer(many=True, help_text="The conversation to answer.")
    responses = ShownResponseSerializer(many=True)
    expires_at = serializers.DateTimeField(help_text="End of your lease; submit before, or the item may go to someone else.")


class SkipResultSerializer(serializers.Serializer):
    item = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["skipped"])


class FlagResultSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    item = serializers.IntegerField()
    reason = serializers.ChoiceField(choices=ItemFlag.Reason.choices)
    status = serializers.ChoiceField(choices=ItemFlag.Status.choices)


class FlagReviewResultSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    item = serializers.IntegerField()
    status = serializers.ChoiceField(choices=ItemFlag.Status.choices)


class OpenFlagSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    item = serializers.IntegerField()
    reason = serializers.ChoiceField(choices=ItemFlag.Reason.choices)
    note = serializers.CharField(allow_blank=True)
    labeler = serializers.CharField(help_text="Username of the labeler who flagged it.")
    created_at = serializers.DateTimeField()


class AgreementSerializer(serializers.Serializer):
    pairwise_agreement = serializers.FloatField(
        allow_null=True, help_text="Share of compared pairs ordered alike; null before any comparison."
    )
    kendall_tau = serializers.FloatField(allow_null=True)
    pairs_compared = serializers.IntegerField()
    items = serializers.IntegerField(help_text="Items ranked by two or more labelers.")


class LabelerAgreementSerializer(AgreementSerializer):
    labeler_id = serializers.IntegerField()
    username = serializers.CharField(allow_blank=True)


class ItemAgreementSerializer(AgreementSerializer):
    item = serializers.IntegerField()
    labelers = serializers.IntegerField(help_text="How many labelers ranked the item.")


class ProjectAgreementSerializer(serializers.Serializer):
    project = AgreementSerializer()
    labelers = LabelerAgreementSerializer(many=True, help_text="Each labeler against the others.")
    items = ItemAgreementSerializer(many=True)


class ItemCountsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    ready = serializers.IntegerField(help_text="Active: in the labeling queue.")
    ranked = serializers.IntegerField(help_text="Ranked at least once.")
    complete = serializers.IntegerField(help_text="Ranked by as many labelers as the project asks.")
    flagged = serializers.IntegerField()
    retired = serializers.IntegerField()


class LabelerProgressSerializer(serializers.Serializer):
    labeler_id = serializers.IntegerField()
    labeler__username = serializers.CharField()
    rankings = serializers.IntegerField()
    median_seconds = serializers.FloatField(allow_null=True)
    agreement = LabelerAgreementSerializer(allow_null=True, help_text="Null when none of this labeler's items was ranked by another.")


class ProjectProgressSerializer(serializers.Serializer):
    items = ItemCountsSerializer()
    rankings = serializers.IntegerField()
    median_seconds = serializers.FloatField(allow_null=True, help_text="Median time per ranking.")
    labelers = LabelerProgressSerializer(many=True)
    skips = serializers.IntegerField()
    open_flags = serializers.IntegerField()


class NextItem(APIView):
    """Lease the next item (or return the current lease). 204 when nothing is left for you. 409 in a project that
    asks for an edit of every ranking's best response, while your latest ranking has none (POST
    /api/rankings/{id}/edit/ first)."""

    permission_classes = [IsLabeler]

    @extend_schema(
        responses={
            200: NextItemSerializer,
            204: OpenApiResponse(description="Nothing is left for you to rank in this project."),
            **error_responses(404, 409),
        }
    )
    def get(self, request, slug):
        project = selectors.project_for_labeling(slug)
        if project is None:
            raise NotFound("No such project.")
        if awaiting := demonstrating.ranking_awaiting_edit(labeler=request.user, project=project):
            raise labeling.LabelingError(
                f"This project asks for an edit of every ranking's best response: edit ranking {awaiting.pk} first "
                f"(GET, then POST /api/rankings/{awaiting.pk}/edit/)."
            )
        assignment = labeling.assignment_next(labeler=request.user, project=project)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        shown = selectors.item_for_labeler(assignment)
        # Built by hand rather than by a serializer: this is the hottest response of the labeling loop.
        return Response(
            {
                "item": shown.item_id,
                "messages": shown.messages,
                "responses": [{"key": r.letter, "text": r.text} for r in shown.responses],
                "expires_at": shown.expires_at,
            }
        )


class _ItemAction(APIView):
    """An action on an item leased to you: ``/api/items/<item_id>/...``."""

    permission_classes = [IsLabeler]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if kwargs["item_id"] > MAX_ID:
            raise NotFound("This item is not assigned to you.")


class RankItem(_ItemAction):
    """Submit your ranking of an item leased to you; it becomes preference pairs at once."""

    @extend_schema(request=RankingInputSerializer, responses={201: OwnRankingSerializer, **error_responses(400, 404, 409)})
    def post(self, request, item_id):
        data = _ranking_input(request.data)
        ranking = labeling.ranking_submit(
            labeler=request.user, item_id=item_id, letters=data["tiers"], rationale=data["rationale"] or "",
            time_spent_ms=data["time_spent_ms"],
        )
        return Response(_ranking_json(ranking), status=status.HTTP_201_CREATED)


class SkipItem(_ItemAction):
    """Pass on an item leased to you, saying why; it never comes back to you."""

    @extend_schema(request=SkipSerializer, responses={200: SkipResultSerializer, **error_responses(400, 404, 409)})
    def post(self, request, item_id):
        data = _valid(SkipSerializer, request)
        labeling.assignment_skip(labeler=request.user, item_id=item_id, reason=data["reason"])
        return Response({"item": item_id, "status": "skipped"})


class FlagItem(_ItemAction):
    """Report an item leased to you that cannot be ranked as it is; it leaves the queue until an admin reviews it."""

    @extend_schema(request=FlagSerializer, responses={201: FlagResultSerializer, **error_responses(400, 404, 409)})
    def post(self, request, item_id):
        data = _valid(FlagSerializer, request)
        flag = labeling.item_flag(labeler=request.user, item_id=item_id, **data)
        return Response({"id": flag.pk, "item": item_id, "reason": flag.reason, "status": flag.status}, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter("labeler", int, description="Only this labeler's rankings (researchers and admins)."),
            OpenApiParameter("project", str, description="Only rankings in this project (slug)."),
        ],
        responses={200: _EITHER_RANKING, **error_responses(400, 404)},
    )
)
class RankingList(generics.ListAPIView):
    """Labelers see their own rankings, in the letters they were shown; researchers and admins see everyone's, in
    candidate ids (``?labeler=``, ``?project=``)."""

    serializer_class = RankingSerializer
    permission_classes = [IsLabeler | CanExplore]

    def get_serializer_class(self):
        return _ranking_serializer(self.request.user)

    def get_queryset(self):
        rankings = Ranking.objects.order_by("-created_at").prefetch_related("pairs")
        if not self.request.user.has_perm(EXPLORE):
            rankings = rankings.filter(labeler=self.request.user)
        elif labeler := self.request.query_params.get("labeler"):
            labeler_id = int64(labeler)
            rankings = rankings.filter(labeler_id=labeler_id) if labeler_id is not None else rankings.none()
        if project := self.request.query_params.get("project"):
            rankings = rankings.filter(item__project__slug=project)
        return rankings


class RankingDetail(APIView):
    """Read one of your rankings (in your letters), or revise it (PATCH, in your letters) within the lease window after
    submitting. Researchers and admins read any ranking, in candidate ids."""

    permission_classes = [IsLabeler | CanExplore]

    @extend_schema(responses={200: _EITHER_RANKING, **error_responses(404)})
    def get(self, request, pk):
        rankings = Ranking.objects.all() if request.user.has_perm(EXPLORE) else Ranking.objects.filter(labeler=request.user)
        return Response(_ranking_serializer(request.user)(get_object_or_404(rankings, pk=pk)).data)

    @extend_schema(request=RankingReviseSerializer, responses={200: OwnRankingSerializer, **error_responses(400, 404, 409)})
    def patch(self, request, pk):
        data = _ranking_input(request.data)
        revision = labeling.ranking_revise(labeler=request.user, ranking_id=pk, letters=data["tiers"], rationale=data["rationale"])
        return Response(_ranking_json(revision.ranking))


class ProjectProgress(APIView):
    """Item counts, rankings and time per labeler, skips and open flags. Researchers and admins."""

    permission_classes = [CanExplore]

    @extend_schema(responses={200: ProjectProgressSerializer, **error_responses(404)})
    def get(self, request, slug):
        project = get_object_or_404(Project, slug=slug)
        dashboard = selectors.project_dashboard(project)
        dashboard.pop("agreement")
        dashboard["open_flags"] = selectors.open_flags(project).count()
        return Response(dashboard)


class ProjectAgreement(APIView):
    """Agreement between labelers on the items ranked by more than one. Researchers and admins."""

    permission_classes = [CanExplore]

    @extend_schema(responses={200: ProjectAgreementSerializer, **error_responses(404)})
    def get(self, request, slug):
        return Response(selectors.project_agreement(get_object_or_404(Project, slug=slug)))


class FlagList(APIView):
    """The project's open flags, oldest first (unpaginated). Admins."""

    permission_classes = [IsAdmin]

    @extend_schema(responses={200: OpenFlagSerializer(many=True), **error_responses(404)})
    def get(self, request, slug):
        flags = selectors.open_flags(get_object_or_404(Project, slug=slug))
        return Response(
            [{"id": f.pk, "item": f.item_id, "reason": f.reason, "note": f.note, "labeler": f.labeler.username, "created_at": f.created_at} for f in flags]
        )


class FlagReview(APIView):
    """Dismiss a flag (the item returns to the queue) or retire the item."""

    permission_classes = [IsAdmin]
    decision = "dismiss"

    @extend_schema(request=None, responses={200: FlagReviewResultSerializer, **error_responses(404, 409)})
    def post(self, request, pk):
        review = labeling.flag_dismiss if self.decision == "dismiss" else labeling.flag_retire
        flag = review(admin=request.user, flag_id=pk)
        return Response({"id": flag.pk, "item": flag.item_id, "status": flag.status})


def _ranking_input(data) -> dict:
    """``tiers`` (lists of the letters shown, best tier first; ties share a tier), optional ``rationale`` (None when left
    out, so a revision keeps the old one) and ``time_spent_ms``, checked by hand on the hot path (a serializer costs
    more than the checks); the tiers themselves are validated by the service."""
    if not hasattr(data, "get"):
        raise ValidationError({"detail": "Send a JSON object with `tiers`."})
    rationale, time_spent_ms = data.get("rationale"), data.get("time_spent_ms")
    errors = {}
    if "tiers" not in data:
        errors["tiers"] = ["This field is required."]
    if rationale is not None and not isinstance(rationale, str):
        errors["rationale"] = ["Must be a string."]
    if time_spent_ms is not None and (not isinstance(time_spent_ms, int) or isinstance(time_spent_ms, bool) or time_spent_ms < 0):
        errors["time_spent_ms"] = ["Must be a whole number of milliseconds, 0 or more."]
    if errors:
        raise ValidationError(errors)
    return {"tiers": data["tiers"], "rationale": rationale, "time_spent_ms": time_spent_ms}


def _ranking_json(ranking: Ranking) -> dict:
    """OwnRankingSerializer's output for a ranking its labeler just wrote: letters, not candidate ids."""
    return {
        "id": ranking.pk, "item": ranking.item_id, "labeler": ranking.labeler_id, "tiers": selectors.ranking_letters(ranking),
        "ranking": selectors.ranking_as_text(ranking), "rationale": ranking.rationale, "time_spent_ms": ranking.time_spent_ms,
        "pairs": getattr(ranking, "pair_count", None) or ranking.pairs.count(),
        "created_at": ranking.created_at, "updated_at": ranking.updated_at,
    }


def _valid(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
