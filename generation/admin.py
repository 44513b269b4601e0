from django.contrib import admin

from generation.models import Candidate, GenerationJob, ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "base_model", "adapter_path", "parent", "created_at"]
    list_filter = ["kind"]


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "status", "backend", "prompts_done", "prompts_total", "created_at"]
    list_filter = ["status"]


@admin.register(Candidate)
class CandidateAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt", "source", "model_version", "created_at"]
    list_filter = ["source", "model_version"]
    raw_id_fields = ["prompt", "generation_job"]
