"""Jobs of every kind through the API, and the fields every job kind's serializer shares (its place in the queue)."""

from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.forms import JobFilterForm
from annotation.roles import CanExplore
from config.api import error_responses
from config.job_queue import JobQueues, job_progress, jobs_list
from config.jobs import Job, job_kinds


class JobProgressSerializer(serializers.Serializer):
    done = serializers.IntegerField()
    total = serializers.IntegerField()
    percent = serializers.IntegerField()
    elapsed_seconds = serializers.FloatField()
    per_second = serializers.FloatField(allow_null=True, help_text="Units of work per second, model loading left out.")
    eta_seconds = serializers.FloatField(allow_null=True, help_text="While running.")


class WaitingForSerializer(serializers.Serializer):
    kind = serializers.CharField()
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Job.Status.choices)


class QueuePlaceSerializer(serializers.Serializer):
    position = serializers.IntegerField(help_text="1: the next job of its queue to start.")
    queue = serializers.CharField()
    waiting_for = WaitingForSerializer(many=True, help_text="The running jobs of its queue, then the queued ones before it.")
    wait_seconds = serializers.FloatField(allow_null=True, help_text="Estimated wait; null when a job ahead has no estimate.")
    waiting_for_broker = serializers.BooleanField(
        help_text="The broker could not be reached at launch: the job is sent automatically once it answers."
    )
    text = serializers.CharField(help_text='For people: "2nd in line on the gpu queue, behind training run 14, about 12 min left".')


class JobStateSerializer(serializers.Serializer):
    """Fields every job kind has: where it ran and, while queued, its place in the queue."""

    device = serializers.CharField(help_text="Where it ran (cpu, cuda, cuda:1), as the job resolved it.")
    worker = serializers.CharField(help_text="host:pid of the process that ran it.")
    gpu = serializers.CharField(help_text="The GPU its worker was pinned to (CUDA_VISIBLE_DEVICES: \"1\"); blank when not pinned.")
    queue = serializers.SerializerMethodField(help_text="While queued: its place in the queue; null otherwise.")

    @extend_schema_field(QueuePlaceSerializer(allow_null=True))
    def get_queue(self, job) -> dict | None:
        # One reading of the queues for a whole list (the context is the list serializer's).
        place = self.context.setdefault("job_queues", JobQueues()).place(job)
        return place.as_dict() if place else None


JOB_STATE_FIELDS = ["device", "worker", "gpu", "queue"]


class JobSerializer(JobStateSerializer):
    kind = serializers.CharField(source="job_kind", help_text="generation, training, scoring, evaluation, export or import.")
    id = serializers.IntegerField()
    subject = serializers.CharField(help_text="What it works on.")
    status = serializers.ChoiceField(choices=Job.Status.choices)
    requested_by = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    error = serializers.CharField(allow_blank=True)
    url = serializers.SerializerMethodField(help_text="Its page.")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_requested_by(self, job) -> str | None:
        return job.requested_by.username if job.requested_by else None

    @extend_schema_field(JobProgressSerializer)
    def get_progress(self, job) -> dict:
        return job_progress(job).as_dict()

    def get_url(self, job) -> str:
        return reverse(job.detail_url_name, args=[job.pk])


class JobList(APIView):
    """Every background job, newest first (the latest 100 that match): researchers and admins."""

    permission_classes = [CanExplore]

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", enum=sorted(model.job_kind for model in job_kinds()) or None, description="One kind of job."),
            OpenApiParameter("status", enum=Job.Status.values, description="One status."),
            OpenApiParameter("project", description="A project's slug."),
        ],
        responses={200: JobSerializer(many=True), **error_responses(400)},
    )
    def get(self, request):
        form = JobFilterForm(request.query_params)
        if not form.is_valid():
            raise ValidationError(form.errors)
        return Response(JobSerializer(jobs_list(form.selection()), many=True).data)
