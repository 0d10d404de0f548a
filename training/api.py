from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.projects.permissions import MANAGE, project_for
from config import jobs
from config.api_schema import OBJECT, OBJECT_LIST
from models_registry.forms import offer_only_versions_of
from models_registry.models import ModelVersion
from training import selectors, services
from training.methods.launch import STRATEGIES
from training.models import TrainingRun
from training.specs import METHODS


def run_payload(run: TrainingRun, *, with_steps: bool = False) -> dict:
    version = getattr(run, "model_version", None)
    snapshot = run.snapshot
    payload = {
        "id": run.pk,
        "method": run.method,
        "status": run.status,
        "base_version": run.base_version_id,
        "reward_version": run.reward_version_id,
        "mix_with": run.mix_with_id,
        "dataset_version": _version_payload(run.dataset_version),
        "snapshot": (
            {
                "hash": snapshot.content_hash,
                "rows": snapshot.row_count,
                "dataset": snapshot.format,
                "filters": snapshot.filters,
                # the ai choice, read the same way for snapshots recorded before it always was
                "ai": selectors.snapshot_ai(snapshot),
            }
            if snapshot
            else None
        ),
        "config": run.config,
        "seed": run.seed,
        "processes": run.processes,
        "strategy": run.strategy,
        "step": run.step,
        "total_steps": run.total_steps,
        **jobs.outlook_fields(selectors.run_outlook(run=run)),
        "checkpoint_step": run.checkpoint_step,
        "can_resume": run.can_resume,
        "attempts": run.attempts,
        "error": run.error,
        "final_metrics": run.final_metrics,
        "evaluation": run.evaluation,
        "follow_up": run.follow_up,
        "previous": run.previous_id,
        "follow_ups": [r.pk for r in run.follow_ups.all()],
        "model_version": version.pk if version else None,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    }
    if with_steps:
        payload["steps"] = list(run.steps.values("step", "loss", "metrics"))
        payload["log"] = run.log
    return payload


def _version_payload(version) -> dict | None:
    if version is None:
        return None
    return {
        "label": services.version_label(version),
        "kind": version.kind,
        "hash": version.content_hash,
        "rows": version.row_count,
    }


class TrainingRunInputSerializer(serializers.Serializer):
    method = serializers.ChoiceField(choices=list(METHODS), default="dpo")
    base_version = serializers.PrimaryKeyRelatedField(queryset=ModelVersion.objects.all())
    reward_version = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.all(), required=False, allow_null=True
    )
    mix_with = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.all(), required=False, allow_null=True
    )
    config = serializers.DictField(required=False, default=dict)
    filters = serializers.DictField(required=False, default=dict)
    processes = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Training processes, one per GPU (SFT, reward, DPO, KTO, RRHF); left out: every "
        "GPU of the training worker, else 1.",
    )
    strategy = serializers.ChoiceField(
        choices=list(STRATEGIES),
        default="ddp",
        help_text="How the processes share the model: ddp, fsdp, deepspeed-zero2, deepspeed-zero3.",
    )
    dataset_version = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        default=None,
        max_length=120,
        help_text="Train on a dataset version of this project, NAME@N (NAME: its newest), "
        "instead of the current judgments; leave the filters out then.",
    )
    sft_first = serializers.BooleanField(
        required=False,
        default=False,
        help_text="DPO: an SFT stage on the chosen replies first. Both stages train with the "
        "config's settings that SFT shares (max_steps, epochs, learning_rate, LoRA, seed...).",
    )


@extend_schema_view(
    get=extend_schema(operation_id="training_runs_list", responses={200: OBJECT_LIST}),
    post=extend_schema(
        operation_id="training_run_start",
        request=TrainingRunInputSerializer,
        responses={201: OBJECT},
    ),
)
class TrainingRunListApi(APIView):
    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        services.training_runs_fail_stale(project=project)
        return Response([run_payload(run) for run in selectors.training_runs(project=project)])

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        data = offer_only_versions_of(TrainingRunInputSerializer(data=request.data), project)
        data.is_valid(raise_exception=True)
        run = services.training_run_start(project=project, user=request.user, **data.validated_data)
        return Response(run_payload(run), status=201)


def _project_run(request, slug, run_id) -> TrainingRun:
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    return get_object_or_404(TrainingRun, pk=run_id, project=project)


@extend_schema_view(
    get=extend_schema(operation_id="training_run_detail", responses={200: OBJECT}),
)
class TrainingRunDetailApi(APIView):
    def get(self, request, slug, run_id):
        run = _project_run(request, slug, run_id)
        services.training_runs_fail_stale(project=run.project)
        run.refresh_from_db()
        return Response(run_payload(run, with_steps=True))


@extend_schema_view(
    post=extend_schema(operation_id="training_run_cancel", request=None, responses={200: OBJECT}),
)
class TrainingRunCancelApi(APIView):
    def post(self, request, slug, run_id):
        run = _project_run(request, slug, run_id)
        return Response(run_payload(services.training_run_cancel(run=run)))


@extend_schema_view(
    post=extend_schema(operation_id="training_run_resume", request=None, responses={200: OBJECT}),
)
class TrainingRunResumeApi(APIView):
    def post(self, request, slug, run_id):
        run = _project_run(request, slug, run_id)
        return Response(run_payload(services.training_run_resume(run=run, user=request.user)))
