from django.contrib import admin

from annotation.models import Assignment, Demonstration, ItemFlag, PreferencePair, Project, Prompt, Ranking, RankingItem


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "responses_per_item", "rankings_per_item", "created_at"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "preview", "split", "source", "created_at"]
    list_filter = ["project", "split"]
    search_fields = ["external_id", "content_hash"]


@admin.register(RankingItem)
class RankingItemAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "prompt", "status", "rankings_count"]
    list_filter = ["project", "status"]
    raw_id_fields = ["prompt", "candidates"]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["id", "item", "labeler", "status", "expires_at"]
    list_filter = ["status"]
    raw_id_fields = ["item"]


@admin.register(Ranking)
class RankingAdmin(admin.ModelAdmin):
    list_display = ["id", "item", "labeler", "tiers", "created_at"]
    raw_id_fields = ["item", "assignment"]


@admin.register(ItemFlag)
class ItemFlagAdmin(admin.ModelAdmin):
    list_display = ["id", "item", "labeler", "reason", "status", "created_at"]
    list_filter = ["status", "reason"]
    raw_id_fields = ["item"]


@admin.register(PreferencePair)
class PreferencePairAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "prompt", "source", "margin", "created_at"]
    list_filter = ["project", "source"]
    raw_id_fields = ["prompt", "chosen", "rejected", "ranking"]


@admin.register(Demonstration)
class DemonstrationAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "prompt", "source", "status", "labeler", "created_at"]
    list_filter = ["project", "source", "status"]
    raw_id_fields = ["prompt", "edited_from", "ranking", "labeler", "reviewed_by", "import_job"]
