import json

from django.core.management.base import BaseCommand, CommandError

from annotation.candidates.models import GenerationJob
from annotation.judges.trust import AI_OPTIONS, ai_label_plan
from annotation.models import Project
from config.celery import QueueUnavailable
from config.errors import ServiceError
from models_registry.models import ModelVersion
from models_registry.selectors import version_by_reference
from training import selectors, services
from training.methods.launch import STRATEGIES
from training.models import TrainingRun
from training.specs import METHODS


def _version(reference: str | None, *, what: str) -> ModelVersion | None:
    """A version by its number, its model id or its readable name."""
    if reference is None:
        return None
    if reference.isdigit():
        version = ModelVersion.objects.filter(pk=int(reference)).first()
    else:
        version = version_by_reference(reference)
    if version is None:
        raise CommandError(f"No model version {reference!r} for {what}.")
    return version


def _setting(text: str) -> tuple[str, object]:
    """``key=value`` with the value read as JSON where it parses (numbers, true, null)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise CommandError(f"Settings are key=value, got {text!r}.")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


class Command(BaseCommand):
    help = (
        "Start a training run for scripting: snapshot the project's data and queue the run "
        "on the gpu worker, then print the run as JSON. With --now everything happens in this "
        "process (each stage of the run, then the generation of the new version's candidates) "
        "and the command fails unless every part succeeded."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--method", required=True, choices=list(METHODS))
        parser.add_argument(
            "--base", required=True, help="Base policy version: number, model id or name."
        )
        parser.add_argument(
            "--reward",
            help="Reward model version (PPO, RAFT; RRHF, optional: it then scores every "
            "response instead of people): number, model id or name.",
        )
        parser.add_argument(
            "--mix-with", help="Second version of a soup: number, model id or name."
        )
        parser.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="Config value."
        )
        parser.add_argument(
            "--dataset-version",
            metavar="NAME@N",
            help="Train on this dataset version of the project (NAME alone: its newest) instead "
            "of the current judgments; the data filters (--include-chosen, --min-margin, "
            "--rating-threshold, --ai) do not apply then.",
        )
        parser.add_argument("--include-chosen", action="store_true", help="SFT on chosen too.")
        parser.add_argument(
            "--sft-first",
            action="store_true",
            help="DPO: an SFT stage on chosen replies first, with the settings both share "
            "(--set max_steps, epochs, learning_rate, LoRA, seed...).",
        )
        parser.add_argument("--min-margin", type=int, help="Leave out weaker preference pairs.")
        parser.add_argument(
            "--rating-threshold",
            type=float,
            help="KTO: a rated reply whose mean score (1-7) reaches this is desirable; default 5.",
        )
        parser.add_argument(
            "--ai",
            choices=AI_OPTIONS,
            help="AI judges' labels: exclude, trusted (judges that clear the project's "
            "agreement threshold), include, or only them; default: the project's setting.",
        )
        parser.add_argument(
            "--processes",
            type=int,
            help="Training processes, one per GPU (SFT, reward, DPO, KTO, RRHF); default: every "
            "GPU of the training worker, else 1. More than 1 runs `accelerate launch`.",
        )
        parser.add_argument(
            "--strategy",
            choices=STRATEGIES,
            default="ddp",
            help="How the processes share the model: ddp (default), fsdp, deepspeed-zero2, "
            "deepspeed-zero3 (presets in training/launch_configs/).",
        )
        parser.add_argument(
            "--now",
            action="store_true",
            help="Train, then run every follow-up stage and generation job, in this process "
            "instead of the workers.",
        )

    def handle(self, *args, **options):
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {options['project']!r}.")
        filters = {
            "include_chosen": options["include_chosen"],
            "min_margin": options["min_margin"],
            "rating_threshold": options["rating_threshold"],
            "ai": options["ai"],
        }
        labelled = METHODS[options["method"]].dataset in services.AI_DATASETS
        if labelled and not options["dataset_version"]:  # a version's recipe chose its labels
            self._say_ai_labels(project, options["ai"])
        try:
            run = services.training_run_start(
                project=project,
                method=options["method"],
                base_version=_version(options["base"], what="--base"),
                reward_version=_version(options["reward"], what="--reward"),
                mix_with=_version(options["mix_with"], what="--mix-with"),
                config=dict(_setting(item) for item in options["set"]),
                filters={k: v for k, v in filters.items() if v not in (None, False)},
                queue=not options["now"],
                sft_first=options["sft_first"],
                processes=options["processes"],
                strategy=options["strategy"],
                dataset_version=options["dataset_version"],
            )
        except (ServiceError, QueueUnavailable) as error:
            raise CommandError(str(error)) from None
        chain = services.training_chain_execute(run=run) if options["now"] else [run]
        jobs = list(selectors.generation_jobs_of(runs=chain))
        run = TrainingRun.objects.get(pk=chain[-1].pk)
        summary = {
            "run": run.pk,
            "status": run.status,
            "error": run.error,
            "metrics": run.final_metrics,
            "evaluation": run.evaluation,
            "model_version": getattr(getattr(run, "model_version", None), "name", None),
            "stages": [_stage(stage) for stage in chain],
            "generation_jobs": [_job(job) for job in jobs],
            "left_queued": _left_queued(chain, jobs),
        }
        self.stdout.write(json.dumps(summary, indent=2, default=str))
        if options["now"]:
            _check_all_done(chain, jobs)
        elif run.status == TrainingRun.Status.FAILED:
            raise CommandError(f"Run {run.pk} failed: {run.error}")

    def _say_ai_labels(self, project, ai: str | None) -> None:
        """Which AI judges' labels the run takes, on stderr (stdout holds the JSON)."""
        try:
            plan = ai_label_plan(project=project, ai=ai)
        except ServiceError as error:
            raise CommandError(error.message) from None
        self.stderr.write(plan.text)
        for warning in plan.warnings:
            self.stderr.write(f"Warning: {warning}")


def _stage(run: TrainingRun) -> dict:
    version = getattr(run, "model_version", None)
    return {
        "run": run.pk,
        "method": run.method,
        "status": run.status,
        "steps": run.step,
        "model_version": version.name if version else None,
        "intermediate": version.intermediate if version else None,
    }


def _job(job: GenerationJob) -> dict:
    return {
        "id": job.pk,
        "model_version": job.model_version.name,
        "status": job.status,
        "replies": job.done,
        "error": job.error,
    }


def _left_queued(chain: list[TrainingRun], jobs: list[GenerationJob]) -> list[str]:
    """What waits for a worker: the run itself without --now, nothing after a full --now."""
    return [
        f"training run {run.pk} ({run.method})"
        for run in chain
        if run.status == TrainingRun.Status.QUEUED
    ] + [
        f"generation job {job.pk} ({job.model_version.name})"
        for job in jobs
        if job.status == GenerationJob.Status.QUEUED
    ]


def _check_all_done(chain: list[TrainingRun], jobs: list[GenerationJob]) -> None:
    """CommandError (a non-zero exit) unless every stage and generation job succeeded."""
    for run in chain:
        if run.status == TrainingRun.Status.CANCELLED:
            when = "while it trained" if run.cancel_requested else "before it started"
            raise CommandError(f"Run {run.pk} ({run.method}) was cancelled {when}.")
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(f"Run {run.pk} ({run.method}) {run.status}: {run.error}")
    last = chain[-1]
    if last.follow_up:
        lines = [line for line in last.log.splitlines() if "follow-up" in line]
        reason = lines[-1].split(" ", 2)[-1] if lines else "see the run's log"
        raise CommandError(f"Run {last.pk} ({last.method}) succeeded, but {reason}")
    for job in jobs:
        if job.status != GenerationJob.Status.SUCCEEDED:
            raise CommandError(f"Generation job {job.pk} {job.status}: {job.error or 'no reason'}")
