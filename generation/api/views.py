from django.shortcuts import get_object_or_404
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.models import Project
from config.api import CanExplore, IsAdmin
from generation import jobs, selectors, services
from generation.api.serializers import GenerationJobCreateSerializer, GenerationJobSerializer, ModelVersionSerializer
from generation.models import GenerationJob, ModelVersion


class ModelVersionList(generics.ListCreateAPIView):
    """The model registry: researchers and admins read, admins register."""

    serializer_class = ModelVersionSerializer
    permission_classes = [CanExplore]
    queryset = ModelVersion.objects.select_related("parent").order_by("-created_at")

    def perform_create(self, serializer):
        serializer.instance = services.model_version_register(created_by=self.request.user, **serializer.validated_data)


class ModelVersionDetail(generics.RetrieveAPIView):
    serializer_class = ModelVersionSerializer
    permission_classes = [CanExplore]
    queryset = ModelVersion.objects.select_related("parent")
    lookup_field = "name"


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
            prompt_selection=values["prompts"] or {"mode": "missing"},
            sampling=values["sampling"],
            backend=values["backend"],
            requested_by=request.user,
        )
        return Response(GenerationJobSerializer(job).data, status=status.HTTP_201_CREATED)


class GenerationJobDetail(generics.RetrieveAPIView):
    serializer_class = GenerationJobSerializer
    permission_classes = [CanExplore]

    def get_queryset(self):
        return selectors.jobs_with_plan()


class GenerationJobCancel(APIView):
    """Cancel a queued job, or stop a running one after its current batch."""

    permission_classes = [IsAdmin]

    def post(self, request, pk):
        job = jobs.generation_job_cancel(job=get_object_or_404(GenerationJob, pk=pk))
        return Response(GenerationJobSerializer(selectors.jobs_with_plan().get(pk=job.pk)).data)
