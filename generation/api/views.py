from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.roles import CanExplore, IsAdmin
from annotation.models import Project
from config.jobs import job_cancel
from config.api import error_responses
from generation import jobs, selectors, services
from generation.api.serializers import GenerationJobCreateSerializer, GenerationJobSerializer, ModelVersionSerializer
from generation.models import GenerationJob, ModelVersion


@extend_schema_view(
    get=extend_schema(responses={200: ModelVersionSerializer(many=True), **error_responses(404)}),
    post=extend_schema(responses={201: ModelVersionSerializer, **error_responses(400)}),
)
class ModelVersionList(generics.ListCreateAPIView):
    """The model registry: researchers and admins read, admins register."""

    serializer_class = ModelVersionSerializer
    permission_classes = [CanExplore]
    queryset = ModelVersion.objects.select_related("parent").order_by("-created_at")

    def perform_create(self, serializer):
        try:
            serializer.instance = services.model_version_register(created_by=self.request.user, **serializer.validated_data)
        except OSError as exc:  # the folder cannot even be looked at (a name too long, no permission)
            raise ValidationError({"detail": f"Cannot read {exc.filename}: {exc.strerror}."}) from exc


@extend_schema_view(get=extend_schema(responses={200: ModelVersionSerializer, **error_responses(404)}))
class ModelVersionDetail(generics.RetrieveAPIView):
    serializer_class = ModelVersionSerializer
    permission_classes = [CanExplore]
    queryset = ModelVersion.objects.select_related("parent")
    lookup_field = "name"


@extend_schema_view(
    get=extend_schema(responses={200: GenerationJobSerializer(many=True), **error_responses(404)}),
    post=extend_schema(
        request=GenerationJobCreateSerializer, responses={201: GenerationJobSerializer, **error_responses(400, 404)}
    ),
)
class GenerationJobList(generics.ListAPIView):
    """Generation jobs: researchers and admins read; admins launch (POST)."""

    serializer_class = GenerationJobSerializer
    permission_classes = [CanExplore]

    def get_queryset(self):
        return selectors.jobs_with_plan()

    def post(self, request):
        data = GenerationJobCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        project = get_object_or_404(Project, slug=values["project"])
        job = jobs.generation_job_create(
            project=project,
            plan=[jobs.PlanEntry(entry["model"], entry["n"]) for entry in values["models"]],
            prompt_selection=values.get("prompts") or {"mode": "missing"},
            sampling=values["sampling"],
            backend=values["backend"],
            requested_by=request.user,
        )
        return Response(GenerationJobSerializer(job).data, status=status.HTTP_201_CREATED)


@extend_schema_view(get=extend_schema(responses={200: GenerationJobSerializer, **error_responses(404)}))
class GenerationJobDetail(generics.RetrieveAPIView):
    serializer_class = GenerationJobSerializer
    permission_classes = [CanExplore]

    def get_queryset(self):
        return selectors.jobs_with_plan()


class GenerationJobCancel(APIView):
    """Cancel a queued job, or stop a running one after its current batch. A finished job is a 400."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses={200: GenerationJobSerializer, **error_responses(400, 404)})
    def post(self, request, pk):
        job = job_cancel(job=get_object_or_404(GenerationJob, pk=pk))
        return Response(GenerationJobSerializer(selectors.jobs_with_plan().get(pk=job.pk)).data)
