"""Background imports through the API: a large upload to ``/api/projects/<slug>/prompts/import/`` answers 202 with
one of these; admins follow and cancel it here."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.jobs import JOB_STATE_FIELDS, JobProgressSerializer, JobStateSerializer
from annotation.models import ImportJob
from annotation.roles import CanExplore, IsAdmin
from config.api import error_responses
from config.job_queue import job_progress
from config.jobs import job_cancel


class ImportJobSerializer(JobStateSerializer, serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    progress = serializers.SerializerMethodField(help_text="In kB read: the file is read twice, to check, then to write.")
    problem = serializers.CharField(read_only=True, help_text='Why it failed, in one line ("line 3: ..."); the traceback is in error.')

    class Meta:
        model = ImportJob
        fields = [
            "id", "project", "filename", "status", "phase", "progress", "rows_total", "rows_written", "prompts_created",
            "pairs_created", "duplicates_skipped", "identical_pairs_skipped", "demonstrations_created", "error_line", "problem", "error",
            "cancel_requested", "created_at", "started_at", "finished_at", *JOB_STATE_FIELDS,
        ]

    @extend_schema(responses=JobProgressSerializer)
    def get_progress(self, job) -> dict:
        return job_progress(job).as_dict()


@extend_schema_view(get=extend_schema(responses={200: ImportJobSerializer, **error_responses(404)}))
class ImportJobDetail(generics.RetrieveAPIView):
    serializer_class = ImportJobSerializer
    permission_classes = [CanExplore]
    queryset = ImportJob.objects.select_related("project")


class ImportJobCancel(APIView):
    """Cancel a queued import, or stop a running one at its next progress save; nothing of the file is kept."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses={200: ImportJobSerializer, **error_responses(400, 404)})
    def post(self, request, pk):
        job = job_cancel(job=get_object_or_404(ImportJob, pk=pk))
        return Response(ImportJobSerializer(ImportJob.objects.select_related("project").get(pk=job.pk)).data)
