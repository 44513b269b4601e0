"""Exports through the API: researchers and admins request, follow and download them (labelers get 403)."""

from pathlib import Path

from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.roles import CanExplore, IsExplorer
from annotation import exports
from annotation.api.jobs import JOB_STATE_FIELDS, JobStateSerializer
from annotation.api.serializers import DemonstrationFilterField, DemonstrationFilterSerializer, PairFilterField, PairFilterSerializer
from annotation.models import Export, Project
from config.artifacts import ArtifactNotFound
from config.api import error_responses


class ExportCreateSerializer(serializers.Serializer):
    projects = serializers.SlugRelatedField(slug_field="slug", queryset=Project.objects.all(), many=True, allow_empty=False)
    dataset = serializers.ChoiceField(
        choices=Export.Dataset.choices, default=Export.Dataset.PREFERENCE,
        help_text="preference: pairs chosen by pair_filter; sft: demonstrations chosen by demonstration_filter (formats jsonl, parquet, hf).",
    )
    format = serializers.ChoiceField(choices=Export.Format.choices, default="jsonl")
    pair_filter = PairFilterField(default=dict)
    demonstration_filter = DemonstrationFilterField(default=dict)

    def validate(self, attrs):
        other = "pair_filter" if attrs["dataset"] == Export.Dataset.SFT else "demonstration_filter"
        if attrs.get(other):
            raise serializers.ValidationError({other: [f"Not used by a {attrs['dataset']} export."]})
        return attrs


class ExportSerializer(JobStateSerializer, serializers.ModelSerializer):
    projects = serializers.SlugRelatedField(slug_field="slug", many=True, read_only=True)
    format = serializers.ChoiceField(source="export_format", choices=Export.Format.choices, read_only=True)
    pair_filter = serializers.SerializerMethodField(help_text="A preference export's filter as applied, every key filled in.")
    demonstration_filter = serializers.SerializerMethodField(help_text="An SFT export's filter as applied, every key filled in.")
    data_url = serializers.SerializerMethodField()
    card_url = serializers.SerializerMethodField()

    class Meta:
        model = Export
        fields = [
            "id", "projects", "dataset", "format", "pair_filter", "demonstration_filter", "status", "rows_total", "rows_done", "size_bytes", "sha256",
            "data_url", "card_url", "error", "created_at", "started_at", "finished_at", *JOB_STATE_FIELDS,
        ]

    @extend_schema_field(PairFilterSerializer(allow_null=True))
    def get_pair_filter(self, export) -> dict | None:
        return export.pair_filter if export.dataset == Export.Dataset.PREFERENCE else None

    @extend_schema_field(DemonstrationFilterSerializer(allow_null=True))
    def get_demonstration_filter(self, export) -> dict | None:
        return export.pair_filter if export.dataset == Export.Dataset.SFT else None

    def get_data_url(self, export) -> str | None:
        return f"/api/exports/{export.pk}/data/" if export.status == Export.Status.SUCCEEDED else None

    def get_card_url(self, export) -> str | None:
        return f"/api/exports/{export.pk}/card/" if export.status == Export.Status.SUCCEEDED else None


@extend_schema_view(
    get=extend_schema(responses={200: ExportSerializer(many=True), **error_responses(404)}),
    post=extend_schema(request=ExportCreateSerializer, responses={201: ExportSerializer, **error_responses(400)}),
)
class ExportList(generics.ListAPIView):
    """Exports, newest first. POST ``{projects, format, pair_filter}`` (or ``{projects, dataset: "sft", format,
    demonstration_filter}`` for demonstrations): small exports are ready in the response
    (status ``succeeded``), large ones are written in the background (poll the export)."""

    serializer_class = ExportSerializer
    permission_classes = [IsExplorer]
    queryset = Export.objects.prefetch_related("projects").order_by("-created_at")

    def post(self, request):
        data = ExportCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        sft = values["dataset"] == Export.Dataset.SFT
        export = exports.export_create(
            projects=list(dict.fromkeys(values["projects"])), export_format=values["format"], dataset=values["dataset"],
            pair_filter=values["demonstration_filter"] if sft else values["pair_filter"], requested_by=request.user,
        )
        return Response(ExportSerializer(export).data, status=status.HTTP_201_CREATED)


@extend_schema_view(get=extend_schema(responses={200: ExportSerializer, **error_responses(404)}))
class ExportDetail(generics.RetrieveAPIView):
    serializer_class = ExportSerializer
    permission_classes = [CanExplore]
    queryset = Export.objects.prefetch_related("projects")


class _AnyAccept(DefaultContentNegotiation):
    """A download is a file whatever the client accepts (no 406 for ``Accept: application/zip``); errors are JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


# Set explicitly rather than guessed from the system's MIME table, which knows neither .jsonl nor .parquet.
_CONTENT_TYPES = {".zip": "application/zip", ".md": "text/markdown; charset=utf-8"}
_FILE = OpenApiResponse(OpenApiTypes.BINARY, description="The file, as an attachment.")


class ExportDownload(APIView):
    """The export's data file (a zip for ``hf``, JSONL or Parquet otherwise) or its card (Markdown)."""

    permission_classes = [CanExplore]
    content_negotiation_class = _AnyAccept
    part = "data"

    @extend_schema(
        responses={
            (200, "application/octet-stream"): _FILE,
            (200, "application/zip"): _FILE,
            (200, "text/markdown"): _FILE,
            **error_responses(404),
        }
    )
    def get(self, request, pk):
        export = get_object_or_404(Export, pk=pk, status=Export.Status.SUCCEEDED)
        try:
            stream, name = exports.export_file(export, self.part)
        except ArtifactNotFound:
            raise Http404 from None
        content_type = _CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")
        return FileResponse(stream, as_attachment=True, filename=name, content_type=content_type)
