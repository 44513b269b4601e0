from rest_framework import generics

from config.api import CanExplore
from generation import services
from generation.api.serializers import ModelVersionSerializer
from generation.models import ModelVersion


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
