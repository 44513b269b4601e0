"""Exports through the API: researchers and admins request, follow and download them (labelers get 403)."""

from pathlib import Path

from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import exports
from annotation.models import Export, Project
from config.api import CanExplore, IsExplorer


class ExportCreateSerializer(serializers.Serializer):
    projects = serializers.SlugRelatedField(slug_field="slug", queryset=Project.objects.all(), many=True, allow_empty=False)
    format = serializers.ChoiceField(choices=Export.Format.values, default="jsonl")
    pair_filter = serializers.DictField(
        default=dict,
        help_text="sources, exclude_flagged, min_agreement, created_from, created_to (YYYY-MM-DD), model_versions, eval_fraction",
    )


class ExportSerializer(serializers.ModelSerializer):
    projects = serializers.SlugRelatedField(slug_field="slug", many=True, read_only=True)
    format = serializers.CharField(source="export_format")
    data_url = serializers.SerializerMethodField()
    card_url = serializers.SerializerMethodField()

    class Meta:
        model = Export
        fields = [
            "id", "projects", "format", "pair_filter", "status", "rows_total", "rows_done", "size_bytes", "sha256",
            "data_url", "card_url", "error", "created_at", "started_at", "finished_at",
        ]

    def get_data_url(self, export) -> str | None:
        return f"/api/exports/{export.pk}/data/" if export.status == Export.Status.SUCCEEDED else None

    def get_card_url(self, export) -> str | None:
        return f"/api/exports/{export.pk}/card/" if export.status == Export.Status.SUCCEEDED else None


class ExportList(generics.ListAPIView):
    """Exports, newest first. POST ``{projects, format, pair_filter}``: small exports are ready in the response
    (status ``succeeded``), large ones are written in the background (poll the export)."""

    serializer_class = ExportSerializer
    permission_classes = [IsExplorer]
    queryset = Export.objects.prefetch_related("projects").order_by("-created_at")

    def post(self, request):
        data = ExportCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        export = exports.export_create(
            projects=list(dict.fromkeys(values["projects"])), export_format=values["format"],
            pair_filter=values["pair_filter"], requested_by=request.user,
        )
        return Response(ExportSerializer(export).data, status=status.HTTP_201_CREATED)


class ExportDetail(generics.RetrieveAPIView):
    serializer_class = ExportSerializer
    permission_classes = [CanExplore]
    queryset = Export.objects.prefetch_related("projects")


class ExportDownload(APIView):
    """The export's data file (a zip for ``hf``) or its card."""

    permission_classes = [CanExplore]
    part = "data"

    def get(self, request, pk):
        export = get_object_or_404(Export, pk=pk, status=Export.Status.SUCCEEDED)
        path = Path(export.card_path if self.part == "card" else export.data_path)
        if not path.is_file():
            raise Http404
        return FileResponse(open(path, "rb"), as_attachment=True, filename=path.name)
