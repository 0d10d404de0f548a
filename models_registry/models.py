from django.conf import settings
from django.db import models

from config.paths import DataDirPathField


class ModelVersion(models.Model):
    """A model that can generate (policy) or score (reward). Rows exist only for artifacts
    that were completely written and verified."""

    class Kind(models.TextChoices):
        POLICY = "policy", "Policy"
        REWARD = "reward", "Reward model"

    class Method(models.TextChoices):
        BASE = "base", "Base model"
        SFT = "sft", "SFT"
        REWARD = "reward", "Reward model"
        DPO = "dpo", "DPO"
        KTO = "kto", "KTO"
        RRHF = "rrhf", "RRHF"
        PPO = "ppo", "PPO"
        RAFT = "raft", "RAFT"
        SOUP = "soup", "Rewarded soup"

    class State(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        SERVING = "serving", "Serving"
        RETIRED = "retired", "Retired"

    workspace = models.ForeignKey(
        "annotation.Workspace",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="model_versions",
        help_text="The owner: the workspace whose project trained or imported it. Empty for "
        "a model the operator installed (the base model), which every workspace may use.",
    )
    shared_with = models.ManyToManyField(
        "annotation.Workspace",
        blank=True,
        related_name="model_versions_shared_with_it",
        help_text="Other workspaces whose projects may see, serve and train from it.",
    )
    name = models.CharField(max_length=200, unique=True, help_text="Readable name, for display.")
    model_id = models.SlugField(
        max_length=100,
        unique=True,
        help_text="Id in URLs and the OpenAI-compatible API (letters, digits, '-', '_').",
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.POLICY)
    method = models.CharField(max_length=20, choices=Method.choices)
    state = models.CharField(max_length=10, choices=State.choices, default=State.CANDIDATE)
    promoted_at = models.DateTimeField(
        null=True, blank=True, help_text="When it last became serving; the newest is the incumbent."
    )
    imported_from = models.CharField(
        max_length=500, blank=True, help_text="Folder, GGUF file or hub id of an imported model."
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    base_path = DataDirPathField(
        max_length=500,
        help_text="Folder of the full base weights; stored relative to DATA_DIR when under it.",
    )
    adapter_path = DataDirPathField(
        max_length=500,
        blank=True,
        help_text="LoRA adapter folder, empty for a full model; stored relative to DATA_DIR "
        "when under it.",
    )
    training_run = models.OneToOneField(
        "training.TrainingRun",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="model_version",
    )
    intermediate = models.BooleanField(
        default=False,
        help_text="A stage inside a run (the SFT before DPO): kept in the lineage, but it "
        "generates no candidates and enters no battle unless an admin releases it.",
    )
    snapshot_hash = models.CharField(max_length=64, blank=True)
    config = models.JSONField(default=dict, blank=True)
    seed = models.IntegerField(null=True, blank=True)
    library_versions = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    serving_url = models.CharField(
        max_length=500,
        blank=True,
        help_text="OpenAI-compatible inference server (vLLM, TGI, SGLang) that serves this "
        "version, up to /v1; empty to generate in-process from the files.",
    )
    served_model_name = models.CharField(
        max_length=200, blank=True, help_text="The model name that server knows this version by."
    )
    serving_api_key = models.CharField(
        max_length=500, blank=True, help_text="Bearer key for that server; never shown back."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self):
        return self.name

    @property
    def has_endpoint(self) -> bool:
        """True when an inference server generates for this version instead of this process."""
        return bool(self.serving_url)

    def lineage(self) -> list["ModelVersion"]:
        """This version and its ancestors, root first."""
        chain, node = [], self
        while node is not None:
            chain.append(node)
            node = node.parent
        return list(reversed(chain))


class ProjectModelState(models.Model):
    """A version's serving state in one project. Promotion and retirement act in a project
    and write this row, never ``ModelVersion.state``, so no project reaches into another.
    A project without a row sees the version's default: ``ModelVersion.state`` and
    ``promoted_at``, as registration set them (a base model serving, a trained version a
    candidate). Reads: models_registry/selectors.py (``with_project_state``,
    ``overlay_project_state``)."""

    project = models.ForeignKey(
        "annotation.Project", on_delete=models.CASCADE, related_name="model_states"
    )
    version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="project_states"
    )
    state = models.CharField(max_length=10, choices=ModelVersion.State.choices)
    promoted_at = models.DateTimeField(
        null=True, blank=True, help_text="When it last became serving in this project."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "version"], name="unique_model_state_per_project"
            )
        ]

    def __str__(self):
        return f"{self.version} in {self.project}: {self.state}"


class StateChange(models.Model):
    """One promotion, retirement or release in a project, with the head-to-head record the
    admin saw."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="changes")
    project = models.ForeignKey(
        "annotation.Project",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="model_state_changes",
        help_text="The project whose state of the version changed; empty for a change made "
        "before states were per project (it changed the version's default).",
    )
    from_state = models.CharField(max_length=10, choices=ModelVersion.State.choices)
    to_state = models.CharField(max_length=10, choices=ModelVersion.State.choices)
    incumbent = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    evidence = models.JSONField(
        default=dict, blank=True, help_text="Win rate and interval against the incumbent."
    )
    note = models.TextField(blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]


class ApiKey(models.Model):
    """A key for the API and ``/v1``, named by its user and scoped to one workspace the user
    works in: ``/v1`` answers it with that workspace's models only. Only the SHA-256 of the
    secret is stored (``key_hash``), plus its first characters (``prefix``) so the user can
    tell keys apart; the secret is shown once, when made. A plain fast hash is enough here:
    the secret is 32 random bytes (256 bits), so there is nothing to guess word by word,
    and a lookup by hash must be cheap on every request. A revoked key stays listed."""

    PREFIX_CHARS = 8

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    workspace = models.ForeignKey(
        "annotation.Workspace", on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=PREFIX_CHARS)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None
