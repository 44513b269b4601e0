from rest_framework import serializers

from annotation.models import MAX_K, MAX_RANKINGS_PER_ITEM, MIN_K, MIN_RANKINGS_PER_ITEM, Project, Prompt


class ProjectSerializer(serializers.ModelSerializer):
    responses_per_item = serializers.IntegerField(min_value=MIN_K, max_value=MAX_K, default=4)
    rankings_per_item = serializers.IntegerField(min_value=MIN_RANKINGS_PER_ITEM, max_value=MAX_RANKINGS_PER_ITEM, default=1)

    class Meta:
        model = Project
        fields = ["id", "name", "slug", "guidelines", "responses_per_item", "rankings_per_item", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]


class PromptSerializer(serializers.ModelSerializer):
    candidate_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Prompt
        fields = ["id", "messages", "source", "external_id", "metadata", "content_hash", "split", "candidate_count", "created_at"]


class PromptImportSerializer(serializers.Serializer):
    """Either an uploaded ``file`` (multipart) or ``rows`` (JSON objects in any accepted row format)."""

    file = serializers.FileField(required=False)
    rows = serializers.ListField(child=serializers.JSONField(), required=False, allow_empty=False)
    source = serializers.CharField(required=False, allow_blank=True, max_length=200)
    heldout_fraction = serializers.FloatField(required=False, default=0.0, min_value=0.0, max_value=0.99)

    def validate(self, attrs):
        if ("file" in attrs) == ("rows" in attrs):
            raise serializers.ValidationError("Send either a `file` or a list of `rows`.")
        return attrs


class ImportReportSerializer(serializers.Serializer):
    rows = serializers.IntegerField()
    prompts_created = serializers.IntegerField()
    pairs_created = serializers.IntegerField()
    duplicates_skipped = serializers.IntegerField()
    identical_pairs_skipped = serializers.IntegerField()
