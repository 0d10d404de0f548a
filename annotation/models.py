import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q

# Feature packages' own models, under this app's label.
from annotation.candidates.models import GenerationJob  # noqa: F401
from annotation.chat.models import ChatTurn  # noqa: F401
from annotation.projects.models import Guidelines
from config.paths import DataDirPathField


def default_criteria() -> list[str]:
    return ["helpful", "harmless", "honest"]


def all_task_kinds() -> list[str]:
    return list(TaskKind.values)


class CandidatePolicy(models.TextChoices):
    """Which pairs of model versions' replies become comparison tasks."""

    NEWEST_VS_INCUMBENT = "newest_vs_incumbent", "Newest version vs the incumbent"
    ROUND_ROBIN = "round_robin", "Round-robin over all serving versions"
    ACTIVE = "active", "Pairs the latest reward model is least sure about"


class AiLabelPolicy(models.TextChoices):
    """Which AI judges' labels a project's exports and training snapshots hold when the
    caller names no choice (annotation/judges/trust.py)."""

    EXCLUDE = "exclude", "Leave AI labels out"
    TRUSTED = "trusted", "Only from judges whose agreement with people clears the threshold"
    INCLUDE = "include", "Include every AI label"


class Workspace(models.Model):
    """A team's space. It owns its projects, model versions, judges and constitutions:
    what it owns is seen and used by its own projects only, unless an admin of the
    workspace shares it with another workspace (annotation/projects/permissions.py says who
    is an admin of a workspace). A project created without one gets a workspace of its own."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.name


def _free_workspace_slug(slug: str) -> str:
    candidate, number = slug, 1
    while Workspace.objects.filter(slug=candidate).exists():
        number += 1
        candidate = f"{slug}-{number}"
    return candidate


class Project(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="projects")
    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    overlap_target = models.PositiveSmallIntegerField(
        default=1, help_text="How many labelers judge each task."
    )
    pending_limit = models.PositiveSmallIntegerField(
        default=5, help_text="How many unjudged tasks a labeler may hold at once."
    )
    criteria = models.JSONField(
        default=default_criteria, help_text="Criteria labelers rate and compare on."
    )
    gold_rate = models.FloatField(
        default=0.1, help_text="Share of a labeler's tasks drawn from gold items, 0 to 1."
    )
    skip_flag_threshold = models.PositiveSmallIntegerField(
        default=3, help_text="Skips after which a task is flagged for admins."
    )
    candidate_policy = models.CharField(
        max_length=30,
        choices=CandidatePolicy.choices,
        default=CandidatePolicy.ROUND_ROBIN,
        help_text="Which model versions' replies are paired into comparison tasks.",
    )
    ai_labels = models.CharField(
        max_length=10,
        choices=AiLabelPolicy.choices,
        default=AiLabelPolicy.EXCLUDE,
        help_text="AI labels in exports and training snapshots, unless the caller chooses.",
    )
    ai_min_kappa = models.FloatField(
        default=0.4,
        help_text="Trusted judges: minimum Cohen's kappa against the human majority, -1 to 1.",
    )
    ai_min_compared = models.PositiveIntegerField(
        default=20, help_text="Trusted judges: minimum number of items compared with people."
    )
    task_kinds = models.JSONField(
        default=all_task_kinds,
        help_text="The kinds of task the project uses: only these are created, and the chat "
        "and arena pages need theirs.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=1), name="project_gold_rate_range"
            ),
            models.CheckConstraint(
                condition=Q(ai_min_kappa__gte=-1) & Q(ai_min_kappa__lte=1),
                name="project_ai_min_kappa_range",
            ),
        ]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        if self.workspace_id is None:  # private by default: a workspace of its own
            self.workspace = Workspace.objects.create(
                slug=_free_workspace_slug(self.slug), name=self.name
            )
        super().save(*args, **kwargs)

    def uses(self, kind: str) -> bool:
        return kind in self.task_kinds


class Role(models.TextChoices):
    LABELER = "labeler", "Labeler"
    RESEARCHER = "researcher", "Researcher"
    ADMIN = "admin", "Admin"


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=20, choices=Role.choices)
    guidelines_seen = models.PositiveIntegerField(
        default=0, help_text="The guidelines version this member last opened (0: none)."
    )
    added_at = models.DateTimeField(auto_now_add=True, null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user")
        ]

    def __str__(self):
        return f"{self.user} is {self.role} of {self.project}"


class PromptImport(models.Model):
    """One accepted import file (recorded even when everything in it was already there);
    every prompt, response and judgment it created points back to it."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="imports")
    file_name = models.CharField(max_length=255)
    source = models.CharField(
        max_length=100, blank=True, help_text="The dataset's name; versions select by it."
    )
    format = models.CharField(max_length=20, default="prompts")
    content_hash = models.CharField(max_length=64, blank=True, help_text="sha256 of the file.")
    record_count = models.PositiveIntegerField(default=0, help_text="Records the file holds.")
    prompt_count = models.PositiveIntegerField(help_text="Prompts the file added.")
    existing_count = models.PositiveIntegerField(
        default=0, help_text="Prompts of the file already in the project, not added again."
    )
    response_count = models.PositiveIntegerField(default=0, help_text="Responses it added.")
    judgment_count = models.PositiveIntegerField(default=0, help_text="Judgments it added.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)


CHAT_TURN_KEY = "chat_session"
ARENA_BATTLE_KEY = "arena_battle"


class SoftDeleted(models.Model):
    """A row a user deleted: out of queues, exports and training, kept for audit and
    restorable. Nothing a user submitted is removed for real."""

    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    delete_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        abstract = True

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


class PromptQuerySet(models.QuerySet):
    def alive(self):
        """Prompts nobody deleted."""
        return self.filter(deleted_at__isnull=True)

    def labeling(self):
        """Prompts of the labeling pool: a chat turn's prompt belongs to its conversation,
        an arena battle's prompt to its battle."""
        return self.exclude(metadata__has_key=CHAT_TURN_KEY).exclude(
            metadata__has_key=ARENA_BATTLE_KEY
        )


class ResponseQuerySet(models.QuerySet):
    def alive(self):
        """Responses nobody deleted, to prompts nobody deleted."""
        return self.filter(deleted_at__isnull=True, prompt__deleted_at__isnull=True)

    def labeling(self):
        """Responses to prompts of the labeling pool, not replies inside a chat or a battle."""
        return self.exclude(prompt__metadata__has_key=CHAT_TURN_KEY).exclude(
            prompt__metadata__has_key=ARENA_BATTLE_KEY
        )


class Prompt(SoftDeleted):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    text = models.TextField()
    external_id = models.CharField(max_length=200, blank=True)
    context = models.JSONField(
        default=list, blank=True, help_text="Turns before the prompt ({role, content})."
    )
    metadata = models.JSONField(default=dict, blank=True)
    source_import = models.ForeignKey(
        PromptImport, null=True, blank=True, on_delete=models.SET_NULL, related_name="prompts"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = PromptQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["project", "created_at"]),
            models.Index(fields=["project", "id"], name="prompt_project_id"),
        ]

    def __str__(self):
        return self.text[:60]

    def as_conversation(self) -> list[dict]:
        return [*self.context, {"role": "user", "content": self.text}]


class Response(SoftDeleted):
    """A candidate answer to a prompt: generated by a model version, or written by a person
    (demo data, imported answers) when `model_version` is empty."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="responses")
    model_version = models.ForeignKey(
        "models_registry.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="responses",
    )
    author = models.CharField(max_length=100, blank=True, help_text="Who wrote it, if no model.")
    sample_index = models.PositiveSmallIntegerField(default=0)
    text = models.TextField()
    generation_params = models.JSONField(default=dict)
    completion_tokens = models.PositiveIntegerField(default=0)
    generation_seconds = models.FloatField(default=0.0)
    finished = models.BooleanField(default=True, help_text="Ended with EOS, not cut off.")
    external_id = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True, help_text="An import's own fields.")
    source_import = models.ForeignKey(
        PromptImport, null=True, blank=True, on_delete=models.SET_NULL, related_name="responses"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ResponseQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "model_version", "sample_index"], name="response_unique_sample"
            )
        ]


class TaskKind(models.TextChoices):
    DEMONSTRATION = "demonstration", "Demonstration"
    COMPARISON = "comparison", "Comparison"
    RANKING = "ranking", "Ranking"
    RATING = "rating", "Rating"
    CHAT = "chat", "Chat"
    ARENA = "arena", "Arena battle"


class Task(models.Model):
    """One item of labeling work: a prompt (and, by kind, the responses to judge), to be
    done by `overlap_target` labelers. Gold tasks carry a known answer and are mixed in."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    kind = models.CharField(max_length=20, choices=TaskKind.choices)
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="tasks")
    responses = models.ManyToManyField(Response, through="TaskResponse", related_name="tasks")
    # Distinguishes identical work: "comparison:12:34", "rating:12", "demonstration:5".
    dedupe_key = models.CharField(max_length=200)
    context = models.JSONField(
        default=list, blank=True, help_text="Earlier turns of the conversation, if any."
    )
    overlap_target = models.PositiveSmallIntegerField()
    # Live assignments plus completed ones. The check constraint below makes the database
    # refuse any assignment beyond the overlap target, whatever Python believes.
    assigned_count = models.PositiveSmallIntegerField(default=0)
    priority = models.SmallIntegerField(default=0, help_text="Higher comes first.")
    is_gold = models.BooleanField(default=False)
    gold_answer = models.JSONField(null=True, blank=True)
    skip_count = models.PositiveSmallIntegerField(default=0)
    flagged = models.BooleanField(default=False, help_text="Skipped by many; needs an admin.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "dedupe_key"], name="task_unique_work"),
            models.CheckConstraint(
                condition=Q(assigned_count__lte=F("overlap_target")) | Q(is_gold=True),
                name="task_assigned_within_overlap",
            ),
            models.CheckConstraint(
                condition=Q(is_gold=False) | Q(gold_answer__isnull=False),
                name="task_gold_has_answer",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "is_gold", "-priority", "assigned_count", "id"]),
        ]

    def __str__(self):
        return f"{self.kind} task {self.pk}"

    def ordered_responses(self) -> list[Response]:
        return [
            link.response for link in self.links.select_related("response").order_by("position")
        ]


class TaskResponse(models.Model):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="links")
    response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveSmallIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "response"], name="task_response_once"),
            models.UniqueConstraint(fields=["task", "position"], name="task_response_position"),
        ]


class Assignment(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        SKIPPED = "skipped", "Skipped"
        EXPIRED = "expired", "Expired"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="assignments")
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    # Response ids in the order shown; decided once so a reload shows the same order.
    shown_order = models.JSONField(default=list)
    skip_reason = models.CharField(max_length=200, blank=True)
    assigned_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "labeler"], name="assignment_once_per_labeler")
        ]
        indexes = [models.Index(fields=["labeler", "status"])]

    def shown_responses(self) -> list[Response]:
        by_id = Response.objects.in_bulk(self.shown_order)
        return [by_id[pk] for pk in self.shown_order]


class Judgment(models.Model):
    """What a labeler (or an AI judge) said about a task. Append-only: a correction is a new
    row that supersedes the old one. Which fields are filled depends on `kind`."""

    class Choice(models.TextChoices):
        A = "a", "A is better"
        B = "b", "B is better"
        TIE = "tie", "Tie"
        BOTH_BAD = "both_bad", "Both are bad"

    class Source(models.TextChoices):
        HUMAN = "human", "Human"
        AI = "ai", "AI judge"
        REVIEW = "review", "Reviewer correction"
        IMPORT = "import", "Imported"

    client_id = models.UUIDField(unique=True, default=uuid.uuid4)
    kind = models.CharField(max_length=20, choices=TaskKind.choices)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="judgments")
    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.PROTECT, related_name="judgments"
    )
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="judgments")
    shown_order = models.JSONField(
        default=list, help_text="Response ids in the order the judge saw them."
    )
    context = models.JSONField(default=list, blank=True, help_text="Conversation before the reply.")
    # comparison
    response_a = models.ForeignKey(
        Response, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    response_b = models.ForeignKey(
        Response, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    choice = models.CharField(max_length=10, choices=Choice.choices, blank=True)
    strength = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="1 marginally, 2 slightly, 3 better, 4 much better."
    )
    criteria_choices = models.JSONField(default=dict, blank=True)
    # ranking: response ids best first
    ranking = models.JSONField(default=list, blank=True)
    all_bad = models.BooleanField(default=False)
    # rating
    rated_response = models.ForeignKey(
        Response, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    scores = models.JSONField(default=dict, blank=True)
    flags = models.JSONField(default=list, blank=True)
    # demonstration
    text = models.TextField(blank=True)
    edited_from = models.ForeignKey(
        Response, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    edit_diff = models.TextField(blank=True)
    rationale = models.TextField(blank=True)
    chat_session = models.ForeignKey(
        "ChatSession", null=True, blank=True, on_delete=models.PROTECT, related_name="judgments"
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.HUMAN)
    # AI judgments: which judge, under which constitution version and principle.
    judge = models.ForeignKey(
        "Judge", null=True, blank=True, on_delete=models.PROTECT, related_name="judgments"
    )
    judge_job = models.ForeignKey(
        "JudgeJob", null=True, blank=True, on_delete=models.PROTECT, related_name="judgments"
    )
    constitution = models.ForeignKey(
        "Constitution", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    principle = models.CharField(max_length=100, blank=True)
    soft_label = models.FloatField(
        null=True, blank=True, help_text="AI judge: P(A is better), position bias cancelled."
    )
    ai_details = models.JSONField(
        default=dict, blank=True, help_text="AI judge: per-order probabilities and verdicts."
    )
    needs_review = models.BooleanField(
        default=False, help_text="An AI or imported label a human should check (review queue)."
    )
    # Imported judgments: the import, and the record's original id, line and fields.
    source_import = models.ForeignKey(
        PromptImport, null=True, blank=True, on_delete=models.PROTECT, related_name="judgments"
    )
    import_details = models.JSONField(default=dict, blank=True)
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="judgments"
    )
    time_spent_ms = models.PositiveIntegerField(default=0)
    supersedes = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="superseded_by"
    )
    guidelines = models.ForeignKey(
        Guidelines,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="judgments",
        help_text="The guidelines version the labeler worked under (none if none were written).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["project", "kind", "created_at"]),
            models.Index(fields=["labeler", "created_at"]),
            # The data browser pages newest first by id, within a project and a filter.
            models.Index(fields=["project", "id"], name="judgment_project_id"),
            models.Index(fields=["project", "kind", "id"], name="judgment_project_kind_id"),
            models.Index(fields=["project", "labeler", "id"], name="judgment_project_labeler_id"),
            models.Index(fields=["project", "source", "id"], name="judgment_project_source_id"),
        ]

    @property
    def chosen_and_rejected(self) -> tuple[Response, Response] | None:
        if self.choice == self.Choice.A:
            return self.response_a, self.response_b
        if self.choice == self.Choice.B:
            return self.response_b, self.response_a
        return None


class ChatSession(models.Model):
    """A labeler's conversation with a model; each turn's pick is a comparison judgment."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="chats")
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chats"
    )
    model_version = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.PROTECT, related_name="chats"
    )
    messages = models.JSONField(default=list)
    finished = models.BooleanField(default=False)
    rating = models.PositiveSmallIntegerField(null=True, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)


class Review(models.Model):
    """A reviewer's decision on a judgment. A correction is a new superseding judgment;
    the reviewed row is never changed."""

    class Decision(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        CORRECTED = "corrected", "Corrected"
        REJECTED = "rejected", "Rejected"

    judgment = models.ForeignKey(Judgment, on_delete=models.PROTECT, related_name="reviews")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews"
    )
    decision = models.CharField(max_length=10, choices=Decision.choices)
    correction = models.OneToOneField(
        Judgment, null=True, blank=True, on_delete=models.PROTECT, related_name="correction_of"
    )
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["judgment"], name="review_once_per_judgment"),
            models.CheckConstraint(
                condition=Q(decision="corrected", correction__isnull=False)
                | (~Q(decision="corrected") & Q(correction__isnull=True)),
                name="review_correction_iff_corrected",
            ),
        ]


class ArenaBattle(models.Model):
    """An anonymous battle: one prompt, replies from two model versions shown as A and B,
    the labeler's vote (a Judgment of kind arena), then the names revealed.

    The prompt is the battle's own Prompt row (metadata ``{"arena_battle": id}``), copied
    from the pool or typed by the labeler, so battles never enter the labeling pool."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Waiting for the replies"
        RUNNING = "running", "Generating"
        READY = "ready", "Ready for a vote"
        VOTED = "voted", "Voted"
        FAILED = "failed", "Failed"

    class PromptSource(models.TextChoices):
        POOL = "pool", "From the prompt pool"
        TYPED = "typed", "Typed by the labeler"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="battles")
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="battles"
    )
    prompt = models.OneToOneField(Prompt, on_delete=models.PROTECT, related_name="battle")
    prompt_source = models.CharField(max_length=10, choices=PromptSource.choices)
    pool_prompt = models.ForeignKey(
        Prompt, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    version_a = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.PROTECT, related_name="+"
    )
    version_b = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.PROTECT, related_name="+"
    )
    response_a = models.ForeignKey(
        Response, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    response_b = models.ForeignKey(
        Response, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    generation_params = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    judgment = models.OneToOneField(
        Judgment, null=True, blank=True, on_delete=models.PROTECT, related_name="battle"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    voted_at = models.DateTimeField(null=True, blank=True)
    # The job lifecycle (config/jobs.py): the battle row is the replies' job.
    log = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    # Two replies, each written once (unique per prompt and version), so running the
    # battle again after a lost worker writes only what is missing: it resumes.
    resumable = True
    max_attempts = 3

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~Q(version_a=F("version_b")), name="battle_two_different_versions"
            )
        ]
        indexes = [models.Index(fields=["project", "labeler", "-created_at"])]


class Constitution(models.Model):
    """A written list of principles that steers an AI judge. Versions are immutable: an
    edit stores a new version, and every AI judgment names the version it used.

    Each principle is ``{"name", "critique_request", "revision_request",
    "comparison_question"}`` (Constitutional AI, Bai et al. 2022, appendix C)."""

    workspace = models.ForeignKey(
        Workspace,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="constitutions",
        help_text="The owner; empty for a built-in constitution every workspace may read.",
    )
    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    principles = models.JSONField()
    note = models.TextField(blank=True, help_text="What changed in this version.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "name", "version"], name="constitution_version_once"
            ),
            models.UniqueConstraint(
                fields=["name", "version"],
                condition=Q(workspace__isnull=True),
                name="builtin_constitution_version_once",
            ),
        ]

    def __str__(self):
        return f"{self.name} v{self.version}"


class Judge(models.Model):
    """An LLM judge: a model (a registry version, or any OpenAI-compatible endpoint) plus a
    constitution version. The endpoint key is never shown, logged or exported."""

    class Backend(models.TextChoices):
        LOCAL = "local", "A model version from the registry"
        REMOTE = "remote", "An OpenAI-compatible endpoint"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="judges")
    shared_with = models.ManyToManyField(
        Workspace,
        blank=True,
        related_name="judges_shared_with_it",
        help_text="Other workspaces whose projects may run jobs with this judge (on the "
        "owner's endpoint and key, which they never see).",
    )
    name = models.CharField(max_length=100)
    backend = models.CharField(max_length=10, choices=Backend.choices)
    model_version = models.ForeignKey(
        "models_registry.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="judges",
    )
    endpoint_url = models.URLField(blank=True, help_text="e.g. https://host/v1")
    endpoint_model = models.CharField(max_length=200, blank=True)
    api_key = models.CharField(max_length=500, blank=True)
    constitution = models.ForeignKey(Constitution, on_delete=models.PROTECT, related_name="judges")
    chain_of_thought = models.BooleanField(
        default=False,
        help_text="Critique before the verdict; the probabilities are then clamped to 40-60%.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="judge_name_per_workspace"),
            models.CheckConstraint(
                condition=(Q(backend="local") & Q(model_version__isnull=False))
                | (Q(backend="remote") & ~Q(endpoint_url="")),
                name="judge_has_a_model",
            ),
        ]

    def __str__(self):
        return self.name


class JudgeJob(models.Model):
    """A batch of AI work on Celery: pairwise judgments, critique-and-revision, or new
    prompts (self-instruct). Progress, cancel, a request budget, and what went wrong."""

    class Kind(models.TextChoices):
        PAIRWISE = "pairwise", "Pairwise judgments (RLAIF)"
        REVISION = "revision", "Critique and revision"
        SELF_INSTRUCT = "self_instruct", "Self-instruct: new prompts"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        PARTIAL = "partial", "Partly done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="judge_jobs")
    judge = models.ForeignKey(Judge, on_delete=models.PROTECT, related_name="jobs")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    options = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    max_requests = models.PositiveIntegerField(
        default=200, help_text="Budget: the job stops after this many model requests."
    )
    requests_made = models.PositiveIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    log = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The job lifecycle (config/jobs.py).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    # A lost attempt is failed with the reason, never run again by itself: what it stored
    # stays, and a new job of the same kind skips the pairs and replies already done.
    resumable = False

    class Meta:
        ordering = ["-created_at", "-id"]

    @property
    def is_active(self) -> bool:
        return self.status in {self.Status.QUEUED, self.Status.RUNNING}

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0


class DatasetVersion(models.Model):
    """An immutable, content-hashed dataset: the rows a curation recipe kept, in a JSONL
    file under DATA_DIR, with the recipe, what each step removed, its parents and a card.
    Curation never edits originals; a version only decides what it holds."""

    class Kind(models.TextChoices):
        PREFERENCE = "preference", "Preference (ranked responses)"
        SFT = "sft", "SFT (demonstrations)"
        KTO = "kto", "KTO (unpaired good/bad)"
        PROMPTS = "prompts", "Prompts only"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="dataset_versions")
    name = models.SlugField(max_length=100)
    number = models.PositiveIntegerField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    content_hash = models.CharField(max_length=64, help_text="sha256 of the rows file.")
    path = DataDirPathField(max_length=500, help_text="The rows (JSONL); relative to DATA_DIR.")
    row_count = models.PositiveIntegerField()
    recipe = models.JSONField(default=dict)
    report = models.JSONField(default=list, help_text="Each step: removed, changed, examples.")
    stats = models.JSONField(default=dict, help_text="Counts by source and language, labels.")
    card = models.TextField(help_text="The dataset card (README.md).")
    licence = models.CharField(max_length=100, blank=True)
    parents = models.ManyToManyField("self", symmetrical=False, blank=True, related_name="children")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name", "number"], name="dataset_version_unique_number"
            ),
            models.UniqueConstraint(
                fields=["project", "name", "content_hash"], name="dataset_version_unique_content"
            ),
        ]

    def __str__(self):
        return f"{self.name} v{self.number}"
