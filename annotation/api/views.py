from dataclasses import asdict

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.roles import AnyRoleReadsAdminWrites, CanExplore, IsAdmin
from annotation import imports, selectors, services
from annotation.api.imports import ImportJobSerializer
from annotation.api.serializers import (
    ImportErrorSerializer,
    ImportReportSerializer,
    ProjectSerializer,
    PromptImportSerializer,
    PromptSerializer,
)
from annotation.importing import ImportFileError, RowError, parse_row
from annotation.models import Project, Prompt
from config.api import JSONParser, ValidationErrorSerializer, error_responses


@extend_schema_view(
    get=extend_schema(responses={200: ProjectSerializer(many=True), **error_responses(404)}),
    post=extend_schema(responses={201: ProjectSerializer, **error_responses(400)}),
)
class ProjectList(generics.ListCreateAPIView):
    """Projects. Every role lists them; admins create them."""

    serializer_class = ProjectSerializer
    permission_classes = [AnyRoleReadsAdminWrites]
    queryset = Project.objects.order_by("name")

    def perform_create(self, serializer):
        serializer.instance = services.project_create(created_by=self.request.user, **serializer.validated_data)


@extend_schema_view(get=extend_schema(responses={200: ProjectSerializer, **error_responses(404)}))
class ProjectDetail(generics.RetrieveAPIView):
    serializer_class = ProjectSerializer
    permission_classes = [AnyRoleReadsAdminWrites]
    queryset = Project.objects.all()
    lookup_field = "slug"


class DemonstrationModeSerializer(serializers.Serializer):
    demonstration_mode = serializers.ChoiceField(choices=Project.DemonstrationMode.choices)


class DemonstrationMode(APIView):
    """POST ``{demonstration_mode: off | write | edit_optional | edit_required}`` (admins): whether the project's
    labelers also give demonstrations from now on; what they gave so far is kept."""

    permission_classes = [IsAdmin]

    @extend_schema(request=DemonstrationModeSerializer, responses={200: ProjectSerializer, **error_responses(400, 404)})
    def post(self, request, slug):
        project = get_object_or_404(Project, slug=slug)
        data = DemonstrationModeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = services.project_demonstration_mode_set(project=project, mode=data.validated_data["demonstration_mode"])
        return Response(ProjectSerializer(project).data)


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter("split", str, enum=Prompt.Split.values, description="Only prompts of this split."),
            OpenApiParameter("search", str, description="Text within the messages, or an exact external id."),
        ],
        responses={200: PromptSerializer(many=True), **error_responses(400, 404)},
    )
)
class PromptList(generics.ListAPIView):
    """A project's prompts (admins and researchers). Filters: ``split``, ``search``."""

    serializer_class = PromptSerializer
    permission_classes = [CanExplore]

    def get_queryset(self):
        project = get_object_or_404(Project, slug=self.kwargs["slug"])
        return selectors.prompts_filtered(
            project, q=self.request.query_params.get("search", ""), split=self.request.query_params.get("split", "")
        )


@extend_schema_view(get=extend_schema(responses={200: PromptSerializer, **error_responses(404)}))
class PromptDetail(generics.RetrieveAPIView):
    serializer_class = PromptSerializer
    permission_classes = [CanExplore]

    def get_queryset(self):
        return selectors.prompts_filtered(get_object_or_404(Project, slug=self.kwargs["slug"]))


class PromptImport(APIView):
    """Import prompts or preference rows. A broken row rejects the whole request: 400 with ``line`` and ``detail``."""

    permission_classes = [IsAdmin]
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    accepts_uploads = True  # config/limits.py

    @extend_schema(
        request=PromptImportSerializer,
        responses={
            201: ImportReportSerializer,
            202: OpenApiResponse(ImportJobSerializer, description="A file larger than PREFLOOP_IMPORT_IN_REQUEST_BYTES: "
                                 "imported in the background; follow it at /api/imports/<id>/."),
            **error_responses(404),
            400: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="PromptImportError",
                    serializers=[ValidationErrorSerializer, ImportErrorSerializer],
                    resource_type_field_name=None,
                ),
                description="Invalid fields, or a row or file that cannot be imported (then nothing is imported).",
            ),
        },
    )
    def post(self, request, slug):
        project = get_object_or_404(Project, slug=slug)
        serializer = PromptImportSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        upload = data.get("file")
        if upload is not None and imports.import_in_background(upload.size):
            job = imports.import_job_create(
                project=project, upload=upload, heldout_fraction=data["heldout_fraction"], source=data.get("source", ""),
                requested_by=request.user,
            )
            return Response(ImportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
        try:
            report = self._import(project, data)
        except ImportFileError as exc:
            return Response({"detail": str(exc), "line": exc.line or None}, status=status.HTTP_400_BAD_REQUEST)
        return Response(ImportReportSerializer(asdict(report)).data, status=status.HTTP_201_CREATED)

    def _import(self, project, data):
        if "file" in data:
            upload = data["file"]
            return services.prompts_import_file(
                project=project,
                stream=upload,
                filename=upload.name,
                source=data.get("source", ""),
                heldout_fraction=data["heldout_fraction"],
            )
        return services.prompts_import(
            project=project,
            rows=_parse_rows(data["rows"]),
            source=data.get("source") or "api",
            heldout_fraction=data["heldout_fraction"],
        )


def _parse_rows(records):
    rows = []
    for number, record in enumerate(records, start=1):
        try:
            rows.append(parse_row(number, record))
        except RowError as exc:
            raise ImportFileError(number, str(exc)) from exc
    return rows
