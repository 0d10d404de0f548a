from django.shortcuts import get_object_or_404
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.permissions import MANAGE, project_for
from models_registry.models import ModelVersion
from training import selectors, services
from training.models import TrainingRun


def run_payload(run: TrainingRun, *, with_steps: bool = False) -> dict:
    version = getattr(run, "model_version", None)
    payload = {
        "id": run.pk,
        "method": run.method,
        "status": run.status,
        "base_version": run.base_version_id,
        "snapshot": {"hash": run.snapshot.content_hash, "rows": run.snapshot.row_count},
        "config": run.config,
        "seed": run.seed,
        "step": run.step,
        "total_steps": run.total_steps,
        "error": run.error,
        "final_metrics": run.final_metrics,
        "model_version": version.pk if version else None,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
    }
    if with_steps:
        payload["steps"] = list(run.steps.values("step", "loss", "metrics"))
    return payload


class TrainingRunInputSerializer(serializers.Serializer):
    method = serializers.ChoiceField(choices=TrainingRun.Method.values, default="dpo")
    base_version = serializers.PrimaryKeyRelatedField(queryset=ModelVersion.objects.all())
    config = serializers.DictField(required=False, default=dict)


class TrainingRunListApi(APIView):
    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        return Response([run_payload(run) for run in selectors.training_runs(project=project)])

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        data = TrainingRunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run = services.training_run_start(
            project=project,
            base_version=data.validated_data["base_version"],
            config=data.validated_data["config"],
            user=request.user,
        )
        return Response(run_payload(run), status=201)


class TrainingRunDetailApi(APIView):
    def get(self, request, slug, run_id):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        run = get_object_or_404(TrainingRun, pk=run_id, project=project)
        return Response(run_payload(run, with_steps=True))


class TrainingRunCancelApi(APIView):
    def post(self, request, slug, run_id):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        run = get_object_or_404(TrainingRun, pk=run_id, project=project)
        return Response(run_payload(services.training_run_cancel(run=run)))
