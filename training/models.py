"""Training runs (reward model or DPO), their live metrics and their artifacts."""

from django.conf import settings
from django.db import models


class TrainingRun(models.Model):
    class Kind(models.TextChoices):
        DPO = "dpo", "DPO policy"
        REWARD = "reward", "Reward model"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    base_version = models.ForeignKey("generation.ModelVersion", on_delete=models.PROTECT, related_name="training_runs")
    projects = models.ManyToManyField("annotation.Project", related_name="training_runs")
    config = models.JSONField(default=dict, help_text="Validated training settings.")
    pair_filter = models.JSONField(default=dict, help_text="Which pairs were selected (sources, agreement, dates).")
    dataset_manifest = models.JSONField(default=dict, blank=True, help_text="Row counts and content hash of the exact pairs used.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    cancel_requested = models.BooleanField(default=False)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    output_dir = models.CharField(max_length=500, blank=True)
    summary = models.JSONField(default=dict, blank=True, help_text="Runtime, samples per second, examples used, device.")
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    training_started_at = models.DateTimeField(null=True, blank=True, help_text="When the first step began (after loading).")
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]


class TrainingMetric(models.Model):
    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        EVAL = "eval", "Eval"

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    split = models.CharField(max_length=5, choices=Split.choices)
    name = models.CharField(max_length=100)
    value = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step", "id"]
        indexes = [models.Index(fields=["run", "step"])]


class TrainingRunPair(models.Model):
    """A pair a run trained or evaluated on: every model version traces back to the rankings behind it."""

    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        EVAL = "eval", "Eval"

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="run_pairs")
    pair = models.ForeignKey("annotation.PreferencePair", on_delete=models.CASCADE, related_name="run_uses")
    split = models.CharField(max_length=5, choices=Split.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "pair"], name="run_pair_once")]


class ScoringJob(models.Model):
    """A reward model scoring every candidate of a project (on the GPU queue)."""

    Status = TrainingRun.Status

    project = models.ForeignKey("annotation.Project", on_delete=models.CASCADE, related_name="scoring_jobs")
    reward_version = models.ForeignKey("generation.ModelVersion", on_delete=models.PROTECT, related_name="scoring_jobs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    cancel_requested = models.BooleanField(default=False)
    candidates_total = models.PositiveIntegerField(default=0)
    candidates_done = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]


class CandidateScore(models.Model):
    candidate = models.ForeignKey("generation.Candidate", on_delete=models.CASCADE, related_name="scores")
    reward_version = models.ForeignKey("generation.ModelVersion", on_delete=models.CASCADE, related_name="candidate_scores")
    score = models.FloatField()
    scoring_job = models.ForeignKey(ScoringJob, null=True, on_delete=models.SET_NULL, related_name="scores")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["candidate", "reward_version"], name="one_score_per_reward_model")]
