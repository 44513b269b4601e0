"""The collected data, read-only, for researchers and admins: ranking items and preference pairs."""

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, serializers

from annotation.roles import CanExplore
from annotation.exporting import labeler_pseudonym
from annotation.models import PreferencePair, Project, RankingItem
from annotation.pairs import FILTER_OPTIONS, FilterOption, pair_filter_from, selected_pairs
from config.api import error_responses


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


# The pairs list takes the filters that choose pairs (not eval_fraction, which only splits them), as query parameters.
PAIR_LIST_FILTERS = tuple(option for option in FILTER_OPTIONS if option.selects)
_QUERY_TYPES = {"names": str, "bool": bool, "fraction": float, "date": OpenApiTypes.DATE}


def _query_parameter(option: FilterOption) -> OpenApiParameter:
    description = option.description
    if option.kind == "names":
        values = "" if callable(option.choices) else f" ({', '.join(value for value, _ in option.choices)})"
        description = f"Comma-separated{values}. {description}"
    return OpenApiParameter(option.name, _QUERY_TYPES[option.kind], description=description)


def pair_filter_from_query(params) -> dict:
    """The pair filter in query parameters, as pair_filter_from reads it: lists separated by commas or spaces,
    booleans as words (anything but false, 0 or no is true)."""
    data = {}
    for option in PAIR_LIST_FILTERS:
        value = params.get(option.name)
        if not value:
            continue
        if option.kind == "names":
            data[option.name] = value.replace(",", " ").split()
        elif option.kind == "bool":
            data[option.name] = value.lower() not in ("false", "0", "no")
        else:
            data[option.name] = value
    return data


@extend_schema_view(
    get=extend_schema(
        parameters=[_query_parameter(option) for option in PAIR_LIST_FILTERS],
        responses={200: PreferencePairSerializer(many=True), **error_responses(400, 404)},
    )
)
class PairList(generics.ListAPIView):
    """A project's preference pairs, filtered as exports and training runs filter them (the query parameters below;
    lists comma-separated)."""

    serializer_class = PreferencePairSerializer
    permission_classes = [CanExplore]

    def get_queryset(self):
        project = get_object_or_404(Project, slug=self.kwargs["slug"])
        pairs = selected_pairs([project], pair_filter_from(pair_filter_from_query(self.request.query_params)))
        return pairs.select_related("chosen", "rejected")
