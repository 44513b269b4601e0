"""The collected data, read-only, for researchers and admins: ranking items and preference pairs."""

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, serializers

from annotation.exporting import labeler_pseudonym
from annotation.models import PreferencePair, Project, RankingItem
from annotation.pairs import pair_filter_from, selected_pairs
from config.api import CanExplore, error_responses


class CandidateSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()
    source = serializers.CharField()
    model_version = serializers.CharField(source="model_version.name", allow_null=True, default=None)


class RankingItemSerializer(serializers.ModelSerializer):
    candidates = CandidateSerializer(many=True)

    class Meta:
        model = RankingItem
        fields = ["id", "prompt", "status", "rankings_count", "reward_spread", "candidates", "created_at"]


class PreferencePairSerializer(serializers.ModelSerializer):
    labeler = serializers.SerializerMethodField(help_text="Pseudonymous labeler id (as in exports).")
    chosen_text = serializers.CharField(source="chosen.text")
    rejected_text = serializers.CharField(source="rejected.text")

    class Meta:
        model = PreferencePair
        fields = [
            "id", "prompt", "chosen", "rejected", "chosen_text", "rejected_text", "source", "margin", "chosen_rank",
            "rejected_rank", "k", "ranking", "labeler", "created_at",
        ]

    def get_labeler(self, pair) -> str | None:
        return labeler_pseudonym(pair.labeler_id)


@extend_schema_view(
    get=extend_schema(
        parameters=[OpenApiParameter("status", str, enum=RankingItem.Status.values, description="Only items in this status.")],
        responses={200: RankingItemSerializer(many=True), **error_responses(400, 404)},
    )
)
class ItemList(generics.ListAPIView):
    """A project's ranking items with their candidates (model versions included). Filter: ``status``."""

    serializer_class = RankingItemSerializer
    permission_classes = [CanExplore]

    def get_queryset(self):
        items = RankingItem.objects.filter(project=get_object_or_404(Project, slug=self.kwargs["slug"]))
        status = self.request.query_params.get("status")
        if status:
            if status not in RankingItem.Status.values:
                raise serializers.ValidationError({"status": f"Choose one of {', '.join(RankingItem.Status.values)}."})
            items = items.filter(status=status)
        return items.prefetch_related("candidates__model_version").order_by("id")


@extend_schema_view(get=extend_schema(responses={200: RankingItemSerializer, **error_responses(404)}))
class ItemDetail(generics.RetrieveAPIView):
    serializer_class = RankingItemSerializer
    permission_classes = [CanExplore]

    def get_queryset(self):
        return RankingItem.objects.filter(project__slug=self.kwargs["slug"]).prefetch_related("candidates__model_version")


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter("sources", str, description="Comma-separated pair sources: human, import (default: all)."),
            OpenApiParameter("exclude_flagged", bool, description="Leave out pairs of flagged or retired items (default true)."),
            OpenApiParameter(
                "min_agreement", float, description="Human pairs only from items with at least this agreement (0 to 1)."
            ),
            OpenApiParameter("created_from", OpenApiTypes.DATE, description="First day (inclusive)."),
            OpenApiParameter("created_to", OpenApiTypes.DATE, description="Last day (inclusive)."),
            OpenApiParameter("model_versions", str, description="Comma-separated model version names: both responses by these."),
        ],
        responses={200: PreferencePairSerializer(many=True), **error_responses(400, 404)},
    )
)
class PairList(generics.ListAPIView):
    """A project's preference pairs. Filters (as for exports and training): ``sources`` (comma-separated),
    ``exclude_flagged`` (true/false, default true), ``min_agreement``, ``created_from``, ``created_to``,
    ``model_versions`` (comma-separated)."""

    serializer_class = PreferencePairSerializer
    permission_classes = [CanExplore]
    FILTERS = ("min_agreement", "created_from", "created_to", "model_versions")

    def get_queryset(self):
        project = get_object_or_404(Project, slug=self.kwargs["slug"])
        params = self.request.query_params
        data = {name: params[name] for name in self.FILTERS if params.get(name)}
        if params.get("sources"):
            data["sources"] = [source for source in params["sources"].split(",") if source]
        if params.get("exclude_flagged"):
            data["exclude_flagged"] = params["exclude_flagged"].lower() not in ("false", "0", "no")
        pairs = selected_pairs([project], pair_filter_from(data))
        return pairs.select_related("chosen", "rejected")
