from rest_framework import serializers

from generation.models import ModelVersion


class ModelVersionSerializer(serializers.ModelSerializer):
    parent = serializers.SlugRelatedField(slug_field="name", queryset=ModelVersion.objects.all(), required=False, allow_null=True)

    class Meta:
        model = ModelVersion
        fields = [
            "id", "name", "base_model", "adapter_path", "kind", "parent", "training_run",
            "config", "metrics", "notes", "created_at",
        ]
        read_only_fields = ["id", "training_run", "metrics", "created_at"]
