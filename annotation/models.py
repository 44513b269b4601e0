"""Projects, prompts, ranking items, assignments, rankings and preference pairs.

The whole RLHF loop hangs off these rows: a Prompt gets Candidates (generation app), K of them are shown
together as a RankingItem, a labeler leases it through an Assignment, submits a Ranking (ordered tiers of
candidate ids), and the Ranking becomes PreferencePairs. Imported preference data becomes PreferencePairs too.
"""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from config.jobs import Job

MIN_K, MAX_K = 2, 8
MIN_RANKINGS_PER_ITEM, MAX_RANKINGS_PER_ITEM = 1, 5


class Project(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    guidelines = models.TextField(blank=True, help_text="Markdown shown to labelers above every item.")
    responses_per_item = models.PositiveSmallIntegerField(
        default=4,
        validators=[MinValueValidator(MIN_K), MaxValueValidator(MAX_K)],
        help_text="K: how many candidate responses a labeler ranks together.",
    )
    rankings_per_item = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(MIN_RANKINGS_PER_ITEM), MaxValueValidator(MAX_RANKINGS_PER_ITEM)],
        help_text="How many distinct labelers rank each item.",
    )
    class QueueOrder(models.TextChoices):
        FEWEST_RANKINGS = "fewest_rankings", "Fewest rankings first"
        REWARD_SPREAD = "reward_spread", "Hardest for the reward model first"

    queue_order = models.CharField(max_length=20, choices=QueueOrder.choices, default=QueueOrder.FEWEST_RANKINGS)

    class DemonstrationMode(models.TextChoices):
        OFF = "off", "None"
        WRITE = "write", "Labelers write answers from scratch"
        EDIT_OPTIONAL = "edit_optional", "After ranking, labelers may rewrite the best response"
        EDIT_REQUIRED = "edit_required", "After ranking, labelers rewrite the best response"

    demonstration_mode = models.CharField(
        max_length=20, choices=DemonstrationMode.choices, default=DemonstrationMode.OFF,
        help_text="Whether labelers also write the answer they want (supervised fine-tuning data).",
    )
    queue_reward_version = models.ForeignKey(
        "generation.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The reward model whose scores order the queue (hardest first).",
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("manage", "Admin: manage projects, prompts, models and jobs"),
            ("label", "Labeler: rank responses"),
            ("explore", "Researcher: read and export data"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(responses_per_item__gte=MIN_K) & Q(responses_per_item__lte=MAX_K),
                name="project_k_range",
            ),
            models.CheckConstraint(
                condition=Q(rankings_per_item__gte=MIN_RANKINGS_PER_ITEM) & Q(rankings_per_item__lte=MAX_RANKINGS_PER_ITEM),
                name="project_rankings_per_item_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Prompt(models.Model):
    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        HELDOUT = "heldout", "Held out"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    messages = models.JSONField(help_text='Chat turns: [{"role": "user", "content": "..."}, ...], ending with a user turn.')
    source = models.CharField(max_length=200, blank=True, help_text="Where the prompt came from (file name, api, ...).")
    external_id = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    import_job = models.ForeignKey(
        "annotation.ImportJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The background import that wrote it (removed with its rows if that import fails).",
    )
    content_hash = models.CharField(max_length=64, help_text="sha256 of the canonical JSON of the messages.")
    split = models.CharField(max_length=10, choices=Split.choices, default=Split.TRAIN)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["project", "content_hash"], name="prompt_unique_content_per_project")]
        indexes = [models.Index(fields=["project", "split"])]

    def __str__(self) -> str:
        return self.preview

    @property
    def preview(self) -> str:
        last = self.messages[-1]["content"] if self.messages else ""
        return last if len(last) <= 120 else last[:117] + "..."


class RankingItem(models.Model):
    """K candidates of one prompt, shown together to labelers."""

    class Status(models.TextChoices):
        ACTIVE = "active", "In the queue"
        FLAGGED = "flagged", "Flagged, awaiting review"
        RETIRED = "retired", "Retired"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="items")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="items")
    candidates = models.ManyToManyField("generation.Candidate", related_name="items")
    class Origin(models.TextChoices):
        GENERATION = "generation", "Generated candidates"
        EVALUATION = "evaluation", "Blind comparison from an evaluation"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    origin = models.CharField(
        max_length=10, choices=Origin.choices, default=Origin.GENERATION,
        help_text="Where its responses come from (never shown to labelers); pair filters can leave evaluation items out.",
    )
    rankings_count = models.PositiveSmallIntegerField(default=0, help_text="Submitted rankings, kept for queue ordering.")
    reward_spread = models.FloatField(
        null=True, blank=True, help_text="Highest minus lowest reward of its candidates (the project's queue reward model)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["project", "status", "rankings_count", "id"]),
            models.Index(fields=["project", "status", "reward_spread", "rankings_count", "id"], name="item_queue_by_spread"),
        ]


class Assignment(models.Model):
    """A labeler's lease on an item. A lease counts while ``expires_at`` is in the future; an expired lease returns
    the slot to the queue without any sweep."""

    class Status(models.TextChoices):
        LEASED = "leased", "Leased"
        SUBMITTED = "submitted", "Submitted"
        SKIPPED = "skipped", "Skipped"
        FLAGGED = "flagged", "Flagged"

    item = models.ForeignKey(RankingItem, on_delete=models.CASCADE, related_name="assignments")
    labeler = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.LEASED)
    leased_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    skip_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "labeler"], name="assignment_once_per_labeler")]
        indexes = [models.Index(fields=["labeler", "status"]), models.Index(fields=["item", "status", "expires_at"])]


class Ranking(models.Model):
    """A labeler's ordering of an item's candidates: tiers best first, ties inside a tier."""

    item = models.ForeignKey(RankingItem, on_delete=models.CASCADE, related_name="rankings")
    labeler = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="rankings")
    assignment = models.OneToOneField(Assignment, null=True, blank=True, on_delete=models.SET_NULL, related_name="ranking")
    tiers = models.JSONField(help_text="Lists of candidate ids, best tier first: [[4], [3], [1, 2]] is D > C > A = B.")
    rationale = models.TextField(blank=True)
    time_spent_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["item", "labeler"], name="ranking_once_per_labeler")]


class ItemFlag(models.Model):
    """A labeler's report that an item cannot be ranked as it is; admins dismiss or retire it."""

    class Reason(models.TextChoices):
        UNSAFE = "unsafe", "Unsafe content"
        BROKEN = "broken", "Broken responses"
        DUPLICATE = "duplicate", "Duplicate responses"
        OTHER = "other", "Other"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        DISMISSED = "dismissed", "Dismissed"
        RETIRED = "retired", "Item retired"

    item = models.ForeignKey(RankingItem, on_delete=models.CASCADE, related_name="flags")
    labeler = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="flags")
    reason = models.CharField(max_length=20, choices=Reason.choices)
    note = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)


class PreferencePair(models.Model):
    """One chosen/rejected pair, from a human ranking or from imported preference data."""

    class Source(models.TextChoices):
        HUMAN = "human", "Human ranking"
        IMPORT = "import", "Imported"
        EDIT = "edit", "Labeler's edit over the original"
        JUDGE = "judge", "Reward model (rejection sampling)"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="pairs")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="pairs")
    chosen = models.ForeignKey("generation.Candidate", on_delete=models.CASCADE, related_name="pairs_chosen")
    rejected = models.ForeignKey("generation.Candidate", on_delete=models.CASCADE, related_name="pairs_rejected")
    source = models.CharField(max_length=10, choices=Source.choices)
    margin = models.FloatField(default=1.0, help_text="Tier gap between chosen and rejected (1 for adjacent tiers and imports).")
    chosen_rank = models.PositiveSmallIntegerField(null=True, blank=True, help_text="1-based tier of the chosen response.")
    rejected_rank = models.PositiveSmallIntegerField(null=True, blank=True)
    k = models.PositiveSmallIntegerField(null=True, blank=True, help_text="How many responses were shown together.")
    ranking = models.ForeignKey(Ranking, null=True, blank=True, on_delete=models.CASCADE, related_name="pairs")
    labeler = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    import_job = models.ForeignKey("annotation.ImportJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    demonstration = models.ForeignKey(
        "annotation.Demonstration", null=True, blank=True, on_delete=models.CASCADE, related_name="pairs",
        help_text="The labeler's edit this pair prefers over the original (source edit).",
    )
    judge = models.ForeignKey(
        "generation.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The reward model that chose (source judge).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=~Q(chosen=models.F("rejected")), name="pair_chosen_differs_from_rejected"),
            models.CheckConstraint(
                condition=Q(source="import", ranking__isnull=True)
                | Q(source="human", ranking__isnull=False)
                | Q(source="edit", demonstration__isnull=False)
                | Q(source="judge", judge__isnull=False),
                name="pair_source_matches_origin",
            ),
            models.UniqueConstraint(fields=["demonstration"], name="pair_one_per_edit", condition=Q(source="edit")),
            models.UniqueConstraint(fields=["chosen", "rejected", "judge"], name="pair_unique_judge", condition=Q(source="judge")),
            models.UniqueConstraint(
                fields=["ranking", "chosen", "rejected"], name="pair_unique_per_ranking", condition=Q(source="human")
            ),
            models.UniqueConstraint(
                fields=["chosen", "rejected"], name="pair_unique_import", condition=Q(source="import")
            ),
        ]
        indexes = [models.Index(fields=["project", "source", "created_at"])]


class Demonstration(models.Model):
    """The answer a prompt should get (supervised fine-tuning data): written by a labeler, a labeler's edit of a
    ranked response, an imported SFT row, or a response a reward model picked in rejection sampling. Only accepted
    ones train by default; an admin reviews what labelers write."""

    class Source(models.TextChoices):
        WRITTEN = "written", "Written by a labeler"
        EDITED = "edited", "Edited from a response"
        IMPORT = "import", "Imported"
        REJECTION_SAMPLING = "rejection_sampling", "Picked by rejection sampling"

    class Status(models.TextChoices):
        PENDING = "pending", "Awaiting review"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="demonstrations")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="demonstrations")
    text = models.TextField()
    text_hash = models.CharField(max_length=64, help_text="sha256 of the text.")
    source = models.CharField(max_length=20, choices=Source.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    labeler = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="demonstrations")
    edited_from = models.ForeignKey(
        "generation.Candidate", null=True, blank=True, on_delete=models.CASCADE, related_name="edits",
        help_text="The response the labeler rewrote (source edited).",
    )
    ranking = models.ForeignKey(Ranking, null=True, blank=True, on_delete=models.SET_NULL, related_name="demonstrations")
    time_spent_ms = models.PositiveIntegerField(default=0)
    review_reason = models.CharField(max_length=500, blank=True)
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reviewed_at = models.DateTimeField(null=True, blank=True)
    import_job = models.ForeignKey("annotation.ImportJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    metadata = models.JSONField(default=dict, blank=True, help_text="Provenance: file and row, or job, policy, judge and score.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=~Q(source="edited") | Q(edited_from__isnull=False), name="edit_has_original"),
            models.UniqueConstraint(fields=["prompt", "text_hash"], name="demonstration_import_once", condition=Q(source="import")),
            models.UniqueConstraint(fields=["prompt", "labeler"], name="demonstration_written_once", condition=Q(source="written")),
            models.UniqueConstraint(fields=["edited_from", "labeler"], name="demonstration_edit_once", condition=Q(source="edited")),
        ]
        indexes = [models.Index(fields=["project", "status", "source"]), models.Index(fields=["labeler", "created_at"])]

    @property
    def preview(self) -> str:
        return self.text if len(self.text) <= 120 else self.text[:117] + "..."


class Export(Job):
    """A preference dataset written to the data directory for download (see annotation.exporting)."""

    class Format(models.TextChoices):
        JSONL = "jsonl", "JSONL (TRL preference pairs)"
        PARQUET = "parquet", "Parquet (TRL preference pairs)"
        HF = "hf", "Hugging Face datasets folder, train/test (zip)"
        RANKINGS = "rankings", "Raw rankings (JSONL)"

    class Dataset(models.TextChoices):
        PREFERENCE = "preference", "Preference pairs"
        SFT = "sft", "Demonstrations (SFT)"

    projects = models.ManyToManyField(Project, related_name="exports")
    dataset = models.CharField(max_length=10, choices=Dataset.choices, default=Dataset.PREFERENCE)
    export_format = models.CharField(max_length=10, choices=Format.choices)
    pair_filter = models.JSONField(default=dict, help_text="The pair filter, or the demonstration filter of an SFT export.")
    rows_total = models.PositiveIntegerField(default=0, help_text="Rows selected when the export was requested.")
    rows_done = models.PositiveIntegerField(default=0)
    data_path = models.CharField(max_length=500, blank=True, help_text="The file to download (a zip for hf).")
    card_path = models.CharField(max_length=500, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True, help_text="Of the data (the card not included).")

    job_kind, kind_label, queue = "export", "export", "default"
    task_name = "annotation.tasks.run_export"
    progress_fields, progress_unit = ("rows_done", "rows_total"), "rows"
    project_lookup = "projects"
    dead_worker_message = "The worker writing this export stopped (killed or crashed); request it again."
    detail_url_name = "export_detail"
    list_prefetch_related = ("projects",)

    class Meta(Job.Meta):
        pass

    @property
    def subject(self) -> str:
        return f"{self.get_export_format_display()} of {', '.join(sorted(p.name for p in self.projects.all()))}"



class ImportJob(Job):
    """A large prompt or preference file imported in the background (see annotation.imports): checked whole first,
    then written in short transactions; a failure removes what it wrote."""

    class Phase(models.TextChoices):
        CHECKING = "checking", "Checking every row"
        WRITING = "writing", "Writing"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="imports")
    filename = models.CharField(max_length=200)
    source = models.CharField(max_length=200, blank=True, help_text="Recorded as each prompt's source.")
    file_path = models.CharField(max_length=500, help_text="The file read (an upload is kept here until the import ends).")
    file_is_upload = models.BooleanField(default=True, help_text="Delete the file when the import ends.")
    heldout_fraction = models.FloatField(default=0.0)
    phase = models.CharField(max_length=10, choices=Phase.choices, blank=True)
    kb_total = models.PositiveBigIntegerField(default=0, help_text="Twice the file's size in kB: it is read to check, then to write.")
    kb_done = models.PositiveBigIntegerField(default=0)
    rows_total = models.PositiveIntegerField(default=0, help_text="Rows found by the check.")
    rows_written = models.PositiveIntegerField(default=0)
    prompts_created = models.PositiveIntegerField(default=0)
    pairs_created = models.PositiveIntegerField(default=0)
    duplicates_skipped = models.PositiveIntegerField(default=0)
    identical_pairs_skipped = models.PositiveIntegerField(default=0)
    demonstrations_created = models.PositiveIntegerField(default=0)
    error_line = models.PositiveIntegerField(null=True, blank=True, help_text="The line of the row that rejected the file.")

    job_kind, kind_label, queue = "import", "import", "default"
    task_name = "annotation.tasks.run_import"
    progress_fields, progress_unit = ("kb_done", "kb_total"), "kB (read to check, then to write)"
    dead_worker_message = "The worker importing this file stopped (killed or crashed); what it had written was removed. Import the file again."
    detail_url_name = "import_detail"
    list_select_related = ("project",)

    class Meta(Job.Meta):
        pass

    @property
    def subject(self) -> str:
        return f"{self.filename} into {self.project.name}"

    @property
    def file_bytes(self) -> int:
        return self.kb_total // 2 * 1024

    @property
    def problem(self) -> str:
        """Why it failed, in one line: "line 3: ..." for a broken row (the traceback stays in ``error``)."""
        first = self.error.split("\n", 1)[0]
        return first.removeprefix("ImportFileError: ")

    @classmethod
    def discard_partial_work(cls, pks: list[int]) -> None:
        from annotation.imports import import_discard

        for pk in pks:
            import_discard(pk)
