from django.conf import settings
from django.db import models

from config.paths import DataDirPathField


class DatasetSnapshot(models.Model):
    """An immutable training file: its content hash names it."""

    project = models.ForeignKey(
        "annotation.Project", on_delete=models.CASCADE, related_name="snapshots"
    )
    format = models.CharField(max_length=20)
    content_hash = models.CharField(max_length=64)
    path = DataDirPathField(
        max_length=500, help_text="The JSONL file; stored relative to DATA_DIR."
    )
    row_count = models.PositiveIntegerField()
    filters = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "format", "content_hash"], name="snapshot_unique_content"
            )
        ]


class TrainingRun(models.Model):
    class Method(models.TextChoices):
        SFT = "sft", "SFT (supervised fine-tuning)"
        REWARD = "reward", "Reward model"
        DPO = "dpo", "DPO (direct preference optimisation)"
        KTO = "kto", "KTO (from unpaired good/bad feedback)"
        RRHF = "rrhf", "RRHF (rank k responses per prompt)"
        PPO = "ppo", "PPO against a reward model"
        RAFT = "raft", "RAFT (reward-ranked fine-tuning)"
        SOUP = "soup", "Rewarded soup (mix two runs)"

    class Strategy(models.TextChoices):
        DDP = "ddp", "DDP (data parallel)"
        FSDP = "fsdp", "FSDP (fully sharded)"
        ZERO2 = "deepspeed-zero2", "DeepSpeed ZeRO-2"
        ZERO3 = "deepspeed-zero3", "DeepSpeed ZeRO-3"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    project = models.ForeignKey(
        "annotation.Project", on_delete=models.CASCADE, related_name="training_runs"
    )
    method = models.CharField(max_length=20, choices=Method.choices)
    base_version = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.PROTECT, related_name="training_runs"
    )
    snapshot = models.ForeignKey(
        DatasetSnapshot, null=True, blank=True, on_delete=models.PROTECT, related_name="runs"
    )
    dataset_version = models.ForeignKey(
        "annotation.DatasetVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="training_runs",
        help_text="The dataset version the run's snapshot was made from (else the project's "
        "current judgments).",
    )
    reward_version = models.ForeignKey(
        "models_registry.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The reward model PPO and RAFT optimise against and evaluation judges with.",
    )
    mix_with = models.ForeignKey(
        "models_registry.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="A soup's second ingredient (the first is the base version).",
    )
    config = models.JSONField(default=dict)
    seed = models.IntegerField(default=0)
    processes = models.PositiveSmallIntegerField(
        default=1, help_text="Training processes (one per GPU); more than 1 runs accelerate launch."
    )
    strategy = models.CharField(max_length=20, choices=Strategy.choices, default=Strategy.DDP)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    cancel_requested = models.BooleanField(default=False)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    final_metrics = models.JSONField(default=dict, blank=True)
    evaluation = models.JSONField(
        default=dict, blank=True, help_text="Win rate against the parent on held-out prompts."
    )
    log = models.TextField(blank=True)
    follow_up = models.JSONField(
        default=dict,
        blank=True,
        help_text="A run to start from this run's model when it succeeds (SFT, then DPO).",
    )
    previous = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="follow_ups"
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    checkpoint_step = models.PositiveIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    @property
    def is_active(self) -> bool:
        return self.status in {self.Status.QUEUED, self.Status.RUNNING}

    @property
    def can_resume(self) -> bool:
        return self.status in {self.Status.FAILED, self.Status.CANCELLED} and bool(
            self.checkpoint_step
        )

    @property
    def percent(self) -> int:
        return int(100 * self.step / self.total_steps) if self.total_steps else 0


class TrainingStep(models.Model):
    """Metrics the worker reported after one optimizer step (the live loss curve)."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="steps")
    step = models.PositiveIntegerField()
    loss = models.FloatField()
    metrics = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step"]
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="training_step_unique")]
