"""The model registry, generation jobs and the candidate responses they produce."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from config.jobs import Job


class ModelVersion(models.Model):
    """A registered model: a base model (Hugging Face id or local path), optionally with a LoRA adapter."""

    class Kind(models.TextChoices):
        POLICY = "policy", "Policy (generates responses)"
        REWARD = "reward", "Reward model (scores responses)"

    name = models.SlugField(max_length=100, unique=True, help_text="Short unique name, e.g. smollm2-135m-instruct or round1-dpo.")
    base_model = models.CharField(max_length=500, help_text="Hugging Face model id, local path or s3:// URI of the base weights.")
    adapter_path = models.CharField(max_length=500, blank=True, help_text="Local path or s3:// URI of a PEFT LoRA adapter, if any.")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.POLICY)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    training_run = models.OneToOneField(
        "training.TrainingRun", null=True, blank=True, on_delete=models.PROTECT, related_name="model_version"
    )
    config = models.JSONField(default=dict, blank=True, help_text="Training config or load options.")
    metrics = models.JSONField(default=dict, blank=True)
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "name"]

    def __str__(self) -> str:
        return self.name


class GenerationJob(Job):
    """One or more model versions generating candidates for a project's prompts (generation.jobs)."""

    class Backend(models.TextChoices):
        AUTO = "auto", "Automatic"
        VLLM = "vllm", "vLLM"
        TRANSFORMERS = "transformers", "transformers"

    project = models.ForeignKey("annotation.Project", on_delete=models.CASCADE, related_name="generation_jobs")
    backend = models.CharField(max_length=20, choices=Backend.choices, default=Backend.AUTO)
    sampling = models.JSONField(default=dict, help_text="temperature, top_p, max_new_tokens, seed, stop.")
    prompt_selection = models.JSONField(default=dict, help_text='{"mode": "missing" | "heldout" | "ids", "ids": [...]}')
    prompts_total = models.PositiveIntegerField(default=0)
    prompts_done = models.PositiveIntegerField(default=0, help_text="Prompts every model of the plan has had a first pass over.")
    responses_total = models.PositiveIntegerField(default=0, help_text="Responses wanted: prompts x K.")
    responses_done = models.PositiveIntegerField(default=0, help_text="Responses generated and kept (saved as candidates).")
    work_done = models.FloatField(default=0.0, help_text="responses_done plus the finished share of the batch now generating.")
    tokens_generated = models.PositiveBigIntegerField(default=0, help_text="New tokens of the batches finished.")
    tokens_in_batch = models.PositiveBigIntegerField(default=0, help_text="New tokens so far in the batch now generating.")
    backend_used = models.CharField(max_length=20, blank=True, help_text="The backend that ran (what auto chose).")
    backend_reason = models.CharField(max_length=100, blank=True, help_text='Why: "auto chose it: no GPU", "chosen for the job".')
    duplicates_dropped = models.PositiveIntegerField(default=0, help_text="Responses dropped: empty or duplicate, in all.")
    dropped_empty = models.PositiveIntegerField(default=0, help_text="Dropped: empty (or whitespace only).")
    dropped_duplicate = models.PositiveIntegerField(default=0, help_text="Dropped: the same text as a response the prompt already has.")
    top_up_rounds = models.PositiveSmallIntegerField(default=0, help_text="Extra rounds run for prompts short of K.")
    topped_up = models.PositiveIntegerField(default=0, help_text="Responses kept from the extra rounds.")
    prompts_short = models.PositiveIntegerField(default=0, help_text="Prompts still short of K at the end (no ranking item).")

    job_kind, kind_label, queue = "generation", "generation job", "gpu"
    task_name = "generation.tasks.run_generation_job"
    progress_fields, progress_unit = ("responses_done", "responses_total"), "responses"
    progress_exact_field = "work_done"
    dead_worker_message = "The worker running this job stopped (killed or crashed); the candidates it saved are kept."
    detail_url_name = "job_detail"
    list_select_related = ("project",)
    list_prefetch_related = ("model_plan__model_version",)

    class Meta(Job.Meta):
        pass

    @property
    def subject(self) -> str:
        models_text = ", ".join(f"{entry.model_version.name} ×{entry.n}" for entry in self.model_plan.all())
        return f"{self.project.name}: {self.prompts_total} prompts, {models_text}"

    @property
    def ran_with(self) -> tuple[str, ...]:
        return (self.device, self.backend_used)


class GenerationJobModel(models.Model):
    """How many candidates per prompt one model version contributes to a job."""

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="model_plan")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    n = models.PositiveSmallIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "model_version"], name="job_model_once"),
            models.CheckConstraint(condition=Q(n__gte=1) & Q(n__lte=8), name="job_model_n_range"),
        ]


class Candidate(models.Model):
    """One response to a prompt: generated by a model version, or imported with preference data."""

    class Source(models.TextChoices):
        GENERATED = "generated", "Generated"
        IMPORT = "import", "Imported"
        EVALUATION = "evaluation", "Sent from an evaluation"
        EDIT = "edit", "A labeler's edit"
        REJECTION_SAMPLING = "rejection_sampling", "Rejection sampling"

    prompt = models.ForeignKey("annotation.Prompt", on_delete=models.CASCADE, related_name="candidates")
    text = models.TextField()
    text_hash = models.CharField(max_length=64)
    source = models.CharField(max_length=20, choices=Source.choices)
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="candidates")
    generation_job = models.ForeignKey(GenerationJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="candidates")
    sampling = models.JSONField(default=dict, blank=True, help_text="The settings that produced it.")
    num_tokens = models.PositiveIntegerField(null=True, blank=True)
    finish_reason = models.CharField(max_length=20, blank=True)
    import_job = models.ForeignKey("annotation.ImportJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["prompt", "text_hash"], name="candidate_unique_text_per_prompt"),
            models.CheckConstraint(
                condition=Q(source__in=["import", "edit"]) | Q(model_version__isnull=False), name="generated_candidate_has_model"
            ),
        ]
