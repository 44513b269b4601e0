from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from annotation import demonstrations
from annotation.models import MAX_K, MAX_RANKINGS_PER_ITEM, MIN_K, MIN_RANKINGS_PER_ITEM, Demonstration, PreferencePair, Project, Prompt
from annotation.pairs import FILTER_OPTIONS, FilterOption


class ProjectSerializer(serializers.ModelSerializer):
    responses_per_item = serializers.IntegerField(min_value=MIN_K, max_value=MAX_K, default=4)
    rankings_per_item = serializers.IntegerField(min_value=MIN_RANKINGS_PER_ITEM, max_value=MAX_RANKINGS_PER_ITEM, default=1)
    demonstration_mode = serializers.ChoiceField(
        choices=Project.DemonstrationMode.choices, default=Project.DemonstrationMode.OFF,
        help_text="Whether labelers also give the answer they want: off; write (from scratch); edit_optional or "
        "edit_required (rewrite the best response of each ranking).",
    )

    class Meta:
        model = Project
        fields = [
            "id", "name", "slug", "guidelines", "responses_per_item", "rankings_per_item", "demonstration_mode", "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]


class MessageSerializer(serializers.Serializer):
    role = serializers.CharField(help_text="system, user or assistant")
    content = serializers.CharField(allow_blank=True)


@extend_schema_field(MessageSerializer(many=True))
class MessagesField(serializers.JSONField):
    """Chat turns as stored: ``[{"role": ..., "content": ...}, ...]``, ending with a user turn."""


@extend_schema_field({"type": "array", "items": {"type": "array", "items": {"type": "integer"}}})
class TiersField(serializers.JSONField):
    """A ranking as stored: lists of response ids, best tier first; responses tied share a tier."""


class PromptSerializer(serializers.ModelSerializer):
    messages = MessagesField(read_only=True)
    candidate_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Prompt
        fields = ["id", "messages", "source", "external_id", "metadata", "content_hash", "split", "candidate_count", "created_at"]


class PromptImportSerializer(serializers.Serializer):
    """Either an uploaded ``file`` (multipart) or ``rows`` (JSON objects in any accepted row format)."""

    file = serializers.FileField(
        required=False, help_text="A JSONL, JSON (array) or CSV file of prompts or preference rows, optionally gzipped."
    )
    rows = serializers.ListField(
        child=serializers.JSONField(), required=False, allow_empty=False,
        help_text='Rows as in a file: {"prompt": ...}, {"messages": [...]}, or preference rows with chosen and rejected.',
    )
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
    demonstrations_created = serializers.IntegerField(help_text="SFT rows imported as accepted demonstrations.")


class ImportErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="Why the file or row cannot be imported.")
    line = serializers.IntegerField(
        allow_null=True, help_text="1-based line (or row) of the offending row; null for the whole file."
    )


# --- the pair filter shared by exports and training runs ---------------------------------------------------------


def _filter_field(option: FilterOption) -> serializers.Field:
    options = {"required": False, "help_text": option.description}
    if option.kind == "names":
        # Choices that live in the database (model versions) are left out of the schema, which is built once.
        child = serializers.CharField() if callable(option.choices) else serializers.ChoiceField(choices=option.choices)
        return serializers.ListField(child=child, **options)
    if option.kind == "bool":
        return serializers.BooleanField(**options)
    if option.kind == "fraction":
        return serializers.FloatField(allow_null=True, min_value=0, max_value=option.maximum, **options)
    return serializers.DateField(allow_null=True, **options)


PairFilterSerializer = type(
    "PairFilterSerializer",
    (serializers.Serializer,),
    {
        "__doc__": "Which preference pairs an export or a training run takes. Documents the ``pair_filter`` object; the "
        "filter itself is validated by annotation.pairs (which also refuses unknown keys).",
        "__module__": __name__,
        **{option.name: _filter_field(option) for option in FILTER_OPTIONS},
    },
)


@extend_schema_field(PairFilterSerializer)
class PairFilterField(serializers.DictField):
    """A ``pair_filter`` object. Its values are checked by annotation.pairs; this only refuses a ``sources`` that is
    not a list of names, which the filter cannot even read."""

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        sources = data.get("sources")
        if sources not in (None, "", []) and not (isinstance(sources, list) and all(isinstance(s, str) for s in sources)):
            raise serializers.ValidationError({"sources": [f"Give a list of sources: {', '.join(PreferencePair.Source.values)}."]})
        return data


# --- the demonstration filter shared by SFT exports and SFT runs --------------------------------------------------


class DemonstrationFilterSerializer(serializers.Serializer):
    """Which demonstrations an SFT export or an SFT run takes. Documents the ``demonstration_filter`` object; the
    filter itself is validated by annotation.demonstrations (which also refuses unknown keys)."""

    sources = serializers.ListField(
        child=serializers.ChoiceField(choices=Demonstration.Source.choices), required=False, help_text=demonstrations.HELP["sources"]
    )
    statuses = serializers.ListField(
        child=serializers.ChoiceField(choices=Demonstration.Status.choices), required=False, help_text=demonstrations.HELP["statuses"]
    )
    rejection_jobs = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, help_text=demonstrations.HELP["rejection_jobs"])
    created_from = serializers.DateField(allow_null=True, required=False, help_text=demonstrations.HELP["created_from"])
    created_to = serializers.DateField(allow_null=True, required=False, help_text=demonstrations.HELP["created_to"])
    eval_fraction = serializers.FloatField(
        allow_null=True, required=False, min_value=0, max_value=demonstrations.MAX_EVAL_FRACTION, help_text=demonstrations.HELP["eval_fraction"]
    )


@extend_schema_field(DemonstrationFilterSerializer)
class DemonstrationFilterField(serializers.DictField):
    """A ``demonstration_filter`` object, checked by annotation.demonstrations.demonstration_filter_from."""
