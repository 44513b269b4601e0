"""Demonstrations through the API: labelers write answers, edit the best response of their rankings and read their
own demonstrations (never a model name or a candidate id: a response is the letter they saw); researchers and admins
read every demonstration; admins review them. The services are in annotation.demonstrating."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, extend_schema, extend_schema_view,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import demonstrating
from annotation.api.serializers import MessageSerializer
from annotation.demonstrating import MAX_DEMONSTRATION_CHARS, MAX_REVIEW_REASON
from annotation.labeling import LabelingError
from annotation.models import Demonstration, PreferencePair, Project, Ranking
from annotation.roles import EXPLORE, CanExplore, IsAdmin, IsLabeler
from config.api import MAX_ID, error_responses, int64

MAX_EXCLUDED = 1000  # prompt ids an API client may pass over at once when asking for the next prompt to write


class DemonstrationSerializer(serializers.ModelSerializer):
    """A demonstration as researchers and admins read it, with its origin (the candidate an edit rewrote, the import
    or rejection-sampling provenance in ``metadata``) and its edit pair."""

    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    pair = serializers.SerializerMethodField(help_text="The pair 'edited > original' of an edit; null otherwise.")

    class Meta:
        model = Demonstration
        fields = [
            "id", "project", "prompt", "text", "source", "status", "labeler", "edited_from", "ranking", "time_spent_ms",
            "review_reason", "reviewed_by", "reviewed_at", "metadata", "pair", "created_at", "updated_at",
        ]

    def get_pair(self, demonstration) -> int | None:
        return next((pair.pk for pair in demonstration.pairs.all() if pair.source == PreferencePair.Source.EDIT), None)


class OwnDemonstrationSerializer(serializers.ModelSerializer):
    """A demonstration as its labeler reads it: the edited response by the letter they saw, never a candidate id."""

    prompt_preview = serializers.CharField(source="prompt.preview", read_only=True)
    edited_response = serializers.SerializerMethodField(help_text="For an edit: the letter of the response rewritten.")

    class Meta:
        model = Demonstration
        fields = [
            "id", "prompt", "prompt_preview", "text", "source", "status", "review_reason", "reviewed_at", "ranking",
            "edited_response", "time_spent_ms", "created_at", "updated_at",
        ]

    def get_edited_response(self, demonstration) -> str | None:
        return demonstrating.edited_letter(demonstration)


_EITHER_DEMONSTRATION = PolymorphicProxySerializer(
    component_name="DemonstrationForRole",
    serializers=[OwnDemonstrationSerializer, DemonstrationSerializer],
    resource_type_field_name=None,
)


def _serializer_for(user):
    return DemonstrationSerializer if user.has_perm(EXPLORE) else OwnDemonstrationSerializer


class WriteSerializer(serializers.Serializer):
    prompt = serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="The prompt answered (GET .../demonstrations/next/).")
    text = serializers.CharField(max_length=MAX_DEMONSTRATION_CHARS, trim_whitespace=False, help_text="The answer you want.")
    time_spent_ms = serializers.IntegerField(required=False, allow_null=True, min_value=0, help_text="Time spent writing.")


class EditSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=MAX_DEMONSTRATION_CHARS, trim_whitespace=False, help_text="The response as you would want it.")
    response = serializers.RegexField(
        r"^[A-Z]$", required=False, allow_blank=True,
        help_text="The letter of the response you rewrite, among those you ranked best; by default the first placed there.",
    )
    time_spent_ms = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, help_text="Time spent editing (capped by the ranking's age)."
    )


class ReviewSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=list(demonstrating.DECISIONS))
    reason = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=MAX_REVIEW_REASON,
        help_text="Required to reject: the labeler reads it.",
    )


class PromptToWriteSerializer(serializers.Serializer):
    prompt = serializers.IntegerField()
    messages = MessageSerializer(many=True, help_text="The conversation to answer.")


class EditorSerializer(serializers.Serializer):
    ranking = serializers.IntegerField()
    item = serializers.IntegerField()
    messages = MessageSerializer(many=True)
    response = serializers.CharField(help_text="The letter of the response the edit starts from.")
    text = serializers.CharField(allow_blank=True, help_text="That response's text.")
    best = serializers.ListField(child=serializers.CharField(), help_text="The letters you ranked best (any may be edited).")
    required = serializers.BooleanField(help_text="Whether the project asks for an edit before your next item.")


class EditResultSerializer(OwnDemonstrationSerializer):
    pair = serializers.SerializerMethodField(help_text="The preference pair 'edited > original'.")

    class Meta(OwnDemonstrationSerializer.Meta):
        fields = [*OwnDemonstrationSerializer.Meta.fields, "pair"]

    def get_pair(self, demonstration) -> int:
        return demonstration.pairs.values_list("pk", flat=True).first()


def _project(slug: str) -> Project:
    return get_object_or_404(Project, slug=slug)


def _valid(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=Demonstration.Status.values, description="Only demonstrations in this review status."),
            OpenApiParameter("source", str, enum=Demonstration.Source.values, description="Only demonstrations of this source."),
            OpenApiParameter("labeler", int, description="Only this labeler's demonstrations (researchers and admins)."),
        ],
        responses={200: _EITHER_DEMONSTRATION, **error_responses(400, 404)},
    ),
    post=extend_schema(request=WriteSerializer, responses={201: OwnDemonstrationSerializer, **error_responses(400, 404, 409)}),
)
class DemonstrationList(generics.ListCreateAPIView):
    """A project's demonstrations: labelers see their own, researchers and admins everyone's (pending first, then the
    reviewed ones, newest first; ``?status=``, ``?source=``, ``?labeler=``). POST: write your answer to a prompt of a
    project in write mode (once per prompt); it awaits an admin's review."""

    serializer_class = DemonstrationSerializer
    permission_classes = [IsLabeler | CanExplore]

    def get_serializer_class(self):
        return _serializer_for(self.request.user)

    def get_queryset(self):
        project = _project(self.kwargs["slug"])
        params = self.request.query_params
        errors = {}
        status_filter, source = params.get("status", ""), params.get("source", "")
        if status_filter and status_filter not in Demonstration.Status.values:
            errors["status"] = [f"Choose one of {', '.join(Demonstration.Status.values)}."]
        if source and source not in Demonstration.Source.values:
            errors["source"] = [f"Choose one of {', '.join(Demonstration.Source.values)}."]
        labeler = None
        if params.get("labeler"):
            labeler = int64(params["labeler"])
            if labeler is None:
                errors["labeler"] = ["Give a user id."]
        if errors:
            raise ValidationError(errors)
        if not self.request.user.has_perm(EXPLORE):
            labeler = self.request.user.pk
        queue = demonstrating.review_queue(project, status=status_filter, source=source, labeler=labeler)
        return queue.select_related("project", "ranking").prefetch_related("pairs")

    def create(self, request, *args, **kwargs):
        project = _project(kwargs["slug"])
        data = _valid(WriteSerializer, request)
        prompt = project.prompts.filter(pk=data["prompt"]).first()
        if prompt is None:
            raise NotFound("No such prompt in this project.")
        prompt.project = project
        demonstration = demonstrating.demonstration_write(
            labeler=request.user, prompt=prompt, text=data["text"], time_spent_ms=data.get("time_spent_ms")
        )
        return Response(OwnDemonstrationSerializer(demonstration).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(
        parameters=[OpenApiParameter("exclude", str, description="Comma-separated prompt ids to pass over (those you skipped).")],
        responses={
            200: PromptToWriteSerializer,
            204: OpenApiResponse(description="No prompt is left for you to answer in this project."),
            **error_responses(400, 404, 409),
        },
    )
)
class NextPromptToWrite(APIView):
    """The next prompt for you to answer in a project in write mode: a train prompt you have not answered, the one
    with the fewest demonstrations first. 204 when none is left."""

    permission_classes = [IsLabeler]

    def get(self, request, slug):
        project = _project(slug)
        if project.demonstration_mode != Project.DemonstrationMode.WRITE:
            raise LabelingError(f"{project.name} does not ask labelers to write answers.")
        exclude = _ids(request.query_params.get("exclude", ""))
        prompt = demonstrating.prompt_to_write(labeler=request.user, project=project, exclude=exclude)
        if prompt is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response({"prompt": prompt.pk, "messages": prompt.messages})


def _ids(text: str) -> list[int]:
    parts = text.replace(",", " ").split()
    ids = [int64(part) for part in parts]
    if None in ids or len(ids) > MAX_EXCLUDED:
        raise ValidationError({"exclude": [f"Give at most {MAX_EXCLUDED} prompt ids, separated by commas."]})
    return ids


class RankingEdit(APIView):
    """The editor of one of your rankings (GET: the response you start from, by its letter) and the edit itself
    (POST): in a project that asks for edits, rewrite a response you ranked best into the answer you want. It becomes
    a demonstration (awaiting review) and the preference pair "your edit > the original"."""

    permission_classes = [IsLabeler]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if kwargs["pk"] > MAX_ID:
            raise NotFound("No such ranking of yours.")

    def _ranking(self, request, pk) -> Ranking:
        ranking = Ranking.objects.select_related("item__project", "item__prompt").filter(pk=pk, labeler=request.user).first()
        if ranking is None:
            raise NotFound("No such ranking of yours.")
        return ranking

    @extend_schema(
        parameters=[OpenApiParameter("response", str, description="Start from this response of your top tier (a letter).")],
        responses={200: EditorSerializer, **error_responses(400, 404, 409)},
    )
    def get(self, request, pk):
        ranking = self._ranking(request, pk)
        if not demonstrating.can_edit(ranking):
            raise LabelingError("This ranking cannot be edited: already edited, or the project asks for no edits.")
        editor = demonstrating.editor_for_labeler(ranking, request.query_params.get("response") or None)
        return Response(
            {
                "ranking": editor.ranking_id, "item": editor.item_id, "messages": editor.messages, "response": editor.letter,
                "text": editor.original, "best": editor.top_letters, "required": editor.required,
            }
        )

    @extend_schema(request=EditSerializer, responses={201: EditResultSerializer, **error_responses(400, 404, 409)})
    def post(self, request, pk):
        data = _valid(EditSerializer, request)
        ranking = self._ranking(request, pk)
        demonstration = demonstrating.demonstration_edit(
            labeler=request.user, ranking=ranking, text=data["text"], time_spent_ms=data.get("time_spent_ms"),
            candidate=demonstrating.candidate_for_letter(ranking, data.get("response")),
        )
        return Response(EditResultSerializer(demonstration).data, status=status.HTTP_201_CREATED)


@extend_schema_view(get=extend_schema(responses={200: _EITHER_DEMONSTRATION, **error_responses(404)}))
class DemonstrationDetail(APIView):
    """One demonstration: labelers read their own, researchers and admins any."""

    permission_classes = [IsLabeler | CanExplore]

    def get(self, request, pk):
        demonstrations = Demonstration.objects.select_related("project", "prompt", "ranking")
        if not request.user.has_perm(EXPLORE):
            demonstrations = demonstrations.filter(labeler=request.user)
        demonstration = demonstrations.filter(pk=pk).first() if pk <= MAX_ID else None
        if demonstration is None:
            raise NotFound("No such demonstration.")
        return Response(_serializer_for(request.user)(demonstration).data)


class DemonstrationReview(APIView):
    """Accept or reject a demonstration (a reason is required to reject; its labeler reads it). Admins. Only accepted
    demonstrations train by default; a rejected edit's pair leaves the pair filters' selection."""

    permission_classes = [IsAdmin]

    @extend_schema(request=ReviewSerializer, responses={200: DemonstrationSerializer, **error_responses(400, 404)})
    def post(self, request, pk):
        data = _valid(ReviewSerializer, request)
        if pk > MAX_ID:
            raise NotFound("No such demonstration.")
        demonstration = demonstrating.demonstration_review(
            demonstration=pk, reviewer=request.user, decision=data["decision"], reason=data["reason"]
        )
        return Response(DemonstrationSerializer(demonstration).data)
