from django.contrib import admin

from training.models import TrainingMetric, TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "base_version", "status", "step", "total_steps", "created_at"]
    list_filter = ["kind", "status"]


@admin.register(TrainingMetric)
class TrainingMetricAdmin(admin.ModelAdmin):
    list_display = ["run", "step", "split", "name", "value"]
    list_filter = ["split", "name"]
