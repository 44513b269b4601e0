"""Training runs (DPO, reward model, SFT, GRPO, RLOO), their live metrics and their artifacts."""

from django.db import models

from config.jobs import Job


class TrainingRun(Job):
    class Kind(models.TextChoices):
        DPO = "dpo", "DPO policy"
        REWARD = "reward", "Reward model"
        SFT = "sft", "SFT policy"
        GRPO = "grpo", "GRPO policy"
        RLOO = "rloo", "RLOO policy"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    base_version = models.ForeignKey("generation.ModelVersion", on_delete=models.PROTECT, related_name="training_runs")
    reward_version = models.ForeignKey(
        "generation.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="shaped_runs",
        help_text="GRPO and RLOO: the reward model the policy is trained against.",
    )
    projects = models.ManyToManyField("annotation.Project", related_name="training_runs")
    config = models.JSONField(default=dict, help_text="Validated training settings.")
    pair_filter = models.JSONField(
        default=dict,
        help_text="Which pairs were selected (sources, agreement, dates); for SFT, which demonstrations; for GRPO and "
        "RLOO, which prompts.",
    )
    dataset_manifest = models.JSONField(default=dict, blank=True, help_text="Row counts and content hash of the exact pairs used.")
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    output_dir = models.CharField(max_length=500, blank=True)
    summary = models.JSONField(default=dict, blank=True, help_text="Runtime, samples per second, examples used, device.")
    training_started_at = models.DateTimeField(null=True, blank=True, help_text="When the first step began (after loading).")
    # What the trainer actually used, measured on its datasets once built (empty until then).
    train_pairs_used = models.PositiveIntegerField(null=True, blank=True, help_text="Training pairs the trainer used.")
    eval_pairs_used = models.PositiveIntegerField(null=True, blank=True, help_text="Held-out pairs the trainer evaluated on.")
    pairs_truncated = models.PositiveIntegerField(null=True, blank=True, help_text="Used pairs cut to the max length.")
    pairs_dropped = models.PositiveIntegerField(null=True, blank=True, help_text="Selected pairs left out for their length.")

    job_kind, kind_label, queue = "training", "training run", "gpu"
    task_name = "training.tasks.run_training"
    progress_fields, progress_unit = ("step", "total_steps"), "steps"
    project_lookup = "projects"
    dead_worker_message = "The worker running this training stopped (killed or crashed); no model was registered."
    detail_url_name = "run_detail"
    list_select_related = ("base_version",)
    list_prefetch_related = ("projects",)

    class Meta(Job.Meta):
        pass

    @property
    def pairs_used_known(self) -> bool:
        return self.train_pairs_used is not None

    @property
    def is_online(self) -> bool:
        """GRPO and RLOO: trained on prompts against a reward model, generating as it goes."""
        return self.kind in (self.Kind.GRPO, self.Kind.RLOO)

    @property
    def trains_on(self) -> str:
        """What the run's examples are: "demonstrations" (SFT), "prompts" (GRPO, RLOO) or "pairs". The *_pairs_used
        fields count them."""
        return "demonstrations" if self.kind == self.Kind.SFT else "prompts" if self.is_online else "pairs"

    @property
    def selected_examples(self) -> dict:
        """{train, eval}: the examples selected at launch (the manifest's "pairs", or "demonstrations" for SFT)."""
        return self.dataset_manifest.get(self.trains_on, {})

    @property
    def subject(self) -> str:
        projects = ", ".join(sorted(project.name for project in self.projects.all()))
        return f"{self.get_kind_display()} on {self.base_version.name}, {projects}"


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


class TrainingRunDemonstration(models.Model):
    """A demonstration an SFT run trained or evaluated on."""

    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        EVAL = "eval", "Eval"

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="run_demonstrations")
    demonstration = models.ForeignKey("annotation.Demonstration", on_delete=models.CASCADE, related_name="run_uses")
    split = models.CharField(max_length=5, choices=Split.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "demonstration"], name="run_demonstration_once")]


class TrainingRunPrompt(models.Model):
    """A prompt a GRPO or RLOO run generated completions for."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="run_prompts")
    prompt = models.ForeignKey("annotation.Prompt", on_delete=models.CASCADE, related_name="run_uses")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "prompt"], name="run_prompt_once")]


class TrainingSample(models.Model):
    """A completion an online run generated at a logged step, with its rewards: the best and the worst of the batch,
    for admins to read what the reward model is rewarding."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="samples")
    step = models.PositiveIntegerField()
    messages = models.JSONField(help_text="The prompt: the conversation up to the reply.")
    completion = models.TextField()
    tokens = models.PositiveIntegerField()
    reward = models.FloatField(help_text="The weighted sum of the reward functions.")
    rewards = models.JSONField(help_text="Each reward function's value: reward_model, length_penalty.")

    class Meta:
        ordering = ["-step", "-reward", "id"]
        indexes = [models.Index(fields=["run", "step"])]


class ScoringJob(Job):
    """A reward model scoring every candidate of a project (on the GPU queue)."""

    project = models.ForeignKey("annotation.Project", on_delete=models.CASCADE, related_name="scoring_jobs")
    reward_version = models.ForeignKey("generation.ModelVersion", on_delete=models.PROTECT, related_name="scoring_jobs")
    candidates_total = models.PositiveIntegerField(default=0)
    candidates_done = models.PositiveIntegerField(default=0)

    job_kind, kind_label, queue = "scoring", "scoring job", "gpu"
    task_name = "training.tasks.run_scoring"
    progress_fields, progress_unit = ("candidates_done", "candidates_total"), "candidates"
    dead_worker_message = "The worker running this scoring job stopped (killed or crashed); the scores it saved are kept."
    detail_url_name = "scoring_detail"
    list_select_related = ("project", "reward_version")

    class Meta(Job.Meta):
        pass

    @property
    def subject(self) -> str:
        return f"{self.reward_version.name} scoring {self.project.name}"


class CandidateScore(models.Model):
    candidate = models.ForeignKey("generation.Candidate", on_delete=models.CASCADE, related_name="scores")
    reward_version = models.ForeignKey("generation.ModelVersion", on_delete=models.CASCADE, related_name="candidate_scores")
    score = models.FloatField()
    scoring_job = models.ForeignKey(ScoringJob, null=True, on_delete=models.SET_NULL, related_name="scores")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["candidate", "reward_version"], name="one_score_per_reward_model")]


class Evaluation(Job):
    """Policy versions answering the same prompts with the same sampling and seed (a side-by-side), their responses
    scored by a judge reward model when one is chosen, and the figures of every pair of versions (training.evaluation).
    Its responses are not candidates: they never reach the labeling queue or training pairs, unless an admin sends
    pairs of them to labelers as blind comparisons."""

    class Phase(models.TextChoices):
        GENERATING = "generating", "Generating"
        SCORING = "scoring", "Scoring with the judge"

    project = models.ForeignKey("annotation.Project", on_delete=models.CASCADE, related_name="evaluations")
    judge = models.ForeignKey(
        "generation.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="judged_evaluations",
        help_text="The reward model that scores the responses (none: a side-by-side to read).",
    )
    name = models.CharField(max_length=200, blank=True, help_text="A few words to find it again.")
    sampling = models.JSONField(default=dict, help_text="temperature, top_p, max_new_tokens, seed, stop: the same for every version.")
    samples = models.PositiveSmallIntegerField(default=1, help_text="Responses per prompt and version.")
    prompt_selection = models.JSONField(default=dict, help_text='{"mode": "heldout" | "ids" | "typed", "ids": [...], "typed": [...]}')
    backend = models.CharField(max_length=20, default="auto")
    phase = models.CharField(max_length=10, choices=Phase.choices, blank=True)
    work_total = models.PositiveIntegerField(default=0, help_text="Responses to generate, plus as many to score with a judge.")
    work_done = models.PositiveIntegerField(default=0)
    results = models.JSONField(default=dict, blank=True, help_text="The judge's figures, computed when the job ends.")

    job_kind, kind_label, queue = "evaluation", "evaluation", "gpu"
    task_name = "training.tasks.run_evaluation"
    progress_fields, progress_unit = ("work_done", "work_total"), "responses (generated, then scored)"
    dead_worker_message = "The worker running this evaluation stopped (killed or crashed); the responses it saved are kept."
    detail_url_name = "evaluation_detail"
    list_select_related = ("project", "judge")
    list_prefetch_related = ("entries__model_version",)

    class Meta(Job.Meta):
        pass

    @property
    def subject(self) -> str:
        versions = " vs ".join(entry.model_version.name for entry in self.entries.all())
        judged = f", judged by {self.judge.name}" if self.judge_id else ""
        return f"{self.project.name}: {versions}{judged}"


class EvaluationModel(models.Model):
    """A policy version taking part in an evaluation, in the order its column is shown."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="entries")
    model_version = models.ForeignKey("generation.ModelVersion", on_delete=models.PROTECT, related_name="evaluation_entries")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["position"]
        constraints = [models.UniqueConstraint(fields=["evaluation", "model_version"], name="evaluation_model_once")]


class EvaluationPrompt(models.Model):
    """A prompt of an evaluation: a project prompt, or one typed in for it (no project prompt)."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="prompts")
    prompt = models.ForeignKey("annotation.Prompt", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    messages = models.JSONField()
    position = models.PositiveIntegerField()

    class Meta:
        ordering = ["position"]


class EvaluationResponse(models.Model):
    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="responses")
    eval_prompt = models.ForeignKey(EvaluationPrompt, on_delete=models.CASCADE, related_name="responses")
    model_version = models.ForeignKey("generation.ModelVersion", on_delete=models.PROTECT, related_name="+")
    sample = models.PositiveSmallIntegerField(default=0)
    text = models.TextField()
    num_tokens = models.PositiveIntegerField(default=0)
    finish_reason = models.CharField(max_length=20, blank=True)
    score = models.FloatField(null=True, blank=True, help_text="The judge's reward.")

    class Meta:
        ordering = ["eval_prompt_id", "sample", "id"]
        constraints = [models.UniqueConstraint(fields=["eval_prompt", "model_version", "sample"], name="evaluation_response_once")]


class HumanComparison(models.Model):
    """Two responses of an evaluation sent to labelers as a K=2 item: its rankings are the human verdicts."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="human_comparisons")
    item = models.OneToOneField("annotation.RankingItem", on_delete=models.CASCADE, related_name="human_comparison")
    response_a = models.ForeignKey(EvaluationResponse, on_delete=models.CASCADE, related_name="+")
    response_b = models.ForeignKey(EvaluationResponse, on_delete=models.CASCADE, related_name="+")
    candidate_a = models.ForeignKey("generation.Candidate", on_delete=models.CASCADE, related_name="+")
    candidate_b = models.ForeignKey("generation.Candidate", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["response_a", "response_b"], name="human_comparison_once")]


class RejectionSamplingJob(Job):
    """A policy generating N responses per prompt, a judge reward model scoring all of them, and a selection rule
    over that reward matrix (training.rejection_sampling). The selected responses become demonstrations (source
    rejection_sampling); optionally each prompt's best and worst become a judge-labelled preference pair."""

    class Selection(models.TextChoices):
        BEST_OF_N = "best-of-n", "Best of N (the top response per prompt)"
        TOP_K_PER_PROMPT = "top-k-per-prompt", "Top K per prompt"
        TOP_K_OVERALL = "top-k-overall", "Top K over all prompts"

    class Phase(models.TextChoices):
        GENERATING = "generating", "Generating"
        SCORING = "scoring", "Scoring with the judge"
        SELECTING = "selecting", "Selecting"

    project = models.ForeignKey("annotation.Project", on_delete=models.CASCADE, related_name="rejection_sampling_jobs")
    policy = models.ForeignKey("generation.ModelVersion", on_delete=models.PROTECT, related_name="rejection_sampling_jobs")
    judge = models.ForeignKey("generation.ModelVersion", on_delete=models.PROTECT, related_name="judged_rejection_sampling_jobs")
    n = models.PositiveSmallIntegerField(default=8, help_text="Responses generated per prompt.")
    selection = models.CharField(max_length=20, choices=Selection.choices, default=Selection.BEST_OF_N)
    k = models.PositiveIntegerField(default=1, help_text="How many to keep: per prompt, or over all prompts.")
    make_pairs = models.BooleanField(default=False, help_text="Also record each prompt's best over worst as a judge-labelled pair.")
    sampling = models.JSONField(default=dict, help_text="temperature, top_p, max_new_tokens, seed, stop.")
    prompt_selection = models.JSONField(default=dict, help_text='{"mode": "train" | "ids", "ids": [...]}')
    backend = models.CharField(max_length=20, default="auto")
    phase = models.CharField(max_length=10, choices=Phase.choices, blank=True)
    prompts_total = models.PositiveIntegerField(default=0)
    work_total = models.PositiveIntegerField(default=0, help_text="Responses to generate, plus as many to score.")
    work_done = models.PositiveIntegerField(default=0)
    selected_count = models.PositiveIntegerField(default=0, help_text="Responses selected (demonstrations made).")
    pairs_created = models.PositiveIntegerField(default=0)
    results = models.JSONField(default=dict, blank=True, help_text="Score distribution and selection summary.")

    job_kind, kind_label, queue = "rejection_sampling", "rejection sampling job", "gpu"
    task_name = "training.tasks.run_rejection_sampling"
    progress_fields, progress_unit = ("work_done", "work_total"), "responses (generated, then scored)"
    dead_worker_message = "The worker running this rejection sampling stopped (killed or crashed); nothing was selected."
    detail_url_name = "rejection_sampling_detail"
    list_select_related = ("project", "policy", "judge")

    class Meta(Job.Meta):
        pass

    @property
    def subject(self) -> str:
        return f"{self.project.name}: {self.policy.name} x{self.n}, judged by {self.judge.name}, {self.get_selection_display()}"


class RejectionSample(models.Model):
    """One response of a rejection-sampling job with the judge's score; ``selected`` marks the chosen ones."""

    job = models.ForeignKey(RejectionSamplingJob, on_delete=models.CASCADE, related_name="samples")
    prompt = models.ForeignKey("annotation.Prompt", on_delete=models.CASCADE, related_name="+")
    sample = models.PositiveSmallIntegerField()
    text = models.TextField()
    num_tokens = models.PositiveIntegerField(default=0)
    finish_reason = models.CharField(max_length=20, blank=True)
    score = models.FloatField(null=True, blank=True)
    selected = models.BooleanField(default=False)
    demonstration = models.OneToOneField(
        "annotation.Demonstration", null=True, blank=True, on_delete=models.SET_NULL, related_name="rejection_sample"
    )

    class Meta:
        ordering = ["prompt_id", "sample"]
        constraints = [models.UniqueConstraint(fields=["job", "prompt", "sample"], name="rejection_sample_once")]
