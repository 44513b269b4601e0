"""The labeling loop through the API: next item, rank, skip, flag, my rankings; progress and agreement for admins."""

from django.shortcuts import get_object_or_404
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import labeling, selectors
from annotation.models import ItemFlag, Project, Ranking
from annotation.roles import EXPLORE
from config.api import CanExplore, IsAdmin, IsLabeler


class RankingSerializer(serializers.ModelSerializer):
    pairs = serializers.SerializerMethodField()

    class Meta:
        model = Ranking
        fields = ["id", "item", "labeler", "tiers", "rationale", "time_spent_ms", "pairs", "created_at", "updated_at"]

    def get_pairs(self, ranking) -> int:
        return getattr(ranking, "pair_count", None) or ranking.pairs.count()


class SkipSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500)


class FlagSerializer(serializers.Serializer):
    reason = serializers.ChoiceField(choices=ItemFlag.Reason.choices)
    note = serializers.CharField(required=False, allow_blank=True, default="")


class NextItem(APIView):
    """Lease the next item (or return the current lease). 204 when nothing is left for you."""

    permission_classes = [IsLabeler]

    def get(self, request, slug):
        project = selectors.project_for_labeling(slug)
        if project is None:
            raise NotFound("No such project.")
        assignment = labeling.assignment_next(labeler=request.user, project=project)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        shown = selectors.item_for_labeler(assignment)
        # Built by hand rather than by a serializer: this is the hottest response of the labeling loop.
        return Response(
            {
                "item": shown.item_id,
                "messages": shown.messages,
                "responses": [{"id": r.id, "letter": r.letter, "text": r.text} for r in shown.responses],
                "expires_at": shown.expires_at,
            }
        )


class RankItem(APIView):
    """Submit your ranking of an item leased to you; it becomes preference pairs at once."""

    permission_classes = [IsLabeler]

    def post(self, request, item_id):
        ranking = labeling.ranking_submit(labeler=request.user, item_id=item_id, **_ranking_input(request.data))
        return Response(_ranking_json(ranking), status=status.HTTP_201_CREATED)


class SkipItem(APIView):
    permission_classes = [IsLabeler]

    def post(self, request, item_id):
        data = _valid(SkipSerializer, request)
        labeling.assignment_skip(labeler=request.user, item_id=item_id, reason=data["reason"])
        return Response({"item": item_id, "status": "skipped"})


class FlagItem(APIView):
    permission_classes = [IsLabeler]

    def post(self, request, item_id):
        data = _valid(FlagSerializer, request)
        flag = labeling.item_flag(labeler=request.user, item_id=item_id, **data)
        return Response({"id": flag.pk, "item": item_id, "reason": flag.reason, "status": flag.status}, status=status.HTTP_201_CREATED)


class RankingList(generics.ListAPIView):
    """Labelers see their own rankings; researchers and admins see everyone's (``?labeler=``, ``?project=``)."""

    serializer_class = RankingSerializer
    permission_classes = [IsLabeler | CanExplore]

    def get_queryset(self):
        rankings = Ranking.objects.order_by("-created_at").prefetch_related("pairs")
        if not self.request.user.has_perm(EXPLORE):
            rankings = rankings.filter(labeler=self.request.user)
        elif labeler := self.request.query_params.get("labeler"):
            rankings = rankings.filter(labeler_id=labeler if labeler.isdigit() else -1)
        if project := self.request.query_params.get("project"):
            rankings = rankings.filter(item__project__slug=project)
        return rankings


class RankingDetail(APIView):
    """Read one of your rankings, or revise it (PATCH) within the lease window after submitting."""

    permission_classes = [IsLabeler | CanExplore]

    def get(self, request, pk):
        rankings = Ranking.objects.all() if request.user.has_perm(EXPLORE) else Ranking.objects.filter(labeler=request.user)
        return Response(RankingSerializer(get_object_or_404(rankings, pk=pk)).data)

    def patch(self, request, pk):
        data = _ranking_input(request.data)
        ranking = labeling.ranking_revise(labeler=request.user, ranking_id=pk, tiers=data["tiers"], rationale=data["rationale"])
        return Response(_ranking_json(ranking))


class ProjectProgress(APIView):
    permission_classes = [CanExplore]

    def get(self, request, slug):
        project = get_object_or_404(Project, slug=slug)
        dashboard = selectors.project_dashboard(project)
        dashboard.pop("agreement")
        dashboard["open_flags"] = selectors.open_flags(project).count()
        return Response(dashboard)


class ProjectAgreement(APIView):
    permission_classes = [CanExplore]

    def get(self, request, slug):
        return Response(selectors.project_agreement(get_object_or_404(Project, slug=slug)))


class FlagList(APIView):
    permission_classes = [IsAdmin]

    def get(self, request, slug):
        flags = selectors.open_flags(get_object_or_404(Project, slug=slug))
        return Response(
            [{"id": f.pk, "item": f.item_id, "reason": f.reason, "note": f.note, "labeler": f.labeler.username, "created_at": f.created_at} for f in flags]
        )


class FlagReview(APIView):
    """Dismiss a flag (the item returns to the queue) or retire the item."""

    permission_classes = [IsAdmin]
    decision = "dismiss"

    def post(self, request, pk):
        review = labeling.flag_dismiss if self.decision == "dismiss" else labeling.flag_retire
        flag = review(admin=request.user, flag_id=pk)
        return Response({"id": flag.pk, "item": flag.item_id, "status": flag.status})


def _ranking_input(data) -> dict:
    """``tiers`` (lists of response ids, best tier first; ties share a tier), optional ``rationale`` and
    ``time_spent_ms``, checked by hand on the hot path (a serializer costs more than the checks); the tiers
    themselves are validated by the service."""
    if not hasattr(data, "get"):
        raise ValidationError({"detail": "Send a JSON object with `tiers`."})
    rationale, time_spent_ms = data.get("rationale", ""), data.get("time_spent_ms")
    errors = {}
    if "tiers" not in data:
        errors["tiers"] = ["This field is required."]
    if not isinstance(rationale, str):
        errors["rationale"] = ["Must be a string."]
    if time_spent_ms is not None and (not isinstance(time_spent_ms, int) or isinstance(time_spent_ms, bool) or time_spent_ms < 0):
        errors["time_spent_ms"] = ["Must be a whole number of milliseconds, 0 or more."]
    if errors:
        raise ValidationError(errors)
    return {"tiers": data["tiers"], "rationale": rationale, "time_spent_ms": time_spent_ms}


def _ranking_json(ranking: Ranking) -> dict:
    """RankingSerializer's output for a ranking just written."""
    return {
        "id": ranking.pk, "item": ranking.item_id, "labeler": ranking.labeler_id, "tiers": ranking.tiers,
        "rationale": ranking.rationale, "time_spent_ms": ranking.time_spent_ms,
        "pairs": getattr(ranking, "pair_count", None) or ranking.pairs.count(),
        "created_at": ranking.created_at, "updated_at": ranking.updated_at,
    }


def _valid(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
