"""API of candidates: generation jobs (list, start, preview, cancel) and the release of a
run's intermediate stage, which generates its candidates. Thin callers of services.py and
selectors.py."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.candidates import selectors, services
from annotation.candidates.models import GenerationJob
from annotation.projects.permissions import MANAGE, project_for
from config import jobs
from config.api_schema import OBJECT, OBJECT_LIST
from models_registry import api as registry_api
from models_registry import selectors as registry_selectors
from models_registry.forms import offer_only_versions_of
from models_registry.models import ModelVersion


def job_payload(job: GenerationJob) -> dict:
    return {
        "id": job.pk,
        "model_version": job.model_version_id,
        "status": job.status,
        "done": job.done,
        "total": job.total,
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "attempts": job.attempts,
        "heartbeat_at": job.heartbeat_at,
        # None: each prompt got as many samples as its comparisons need (stored as 0).
        "samples_per_prompt": job.samples_per_prompt or None,
        "best_of": job.best_of,
        "reward_version": job.reward_version_id,
        "generation_params": job.generation_params,
        **jobs.outlook_fields(selectors.generation_job_outlook(job)),
    }


class GenerationJobInputSerializer(serializers.Serializer):
    model_version = serializers.PrimaryKeyRelatedField(queryset=ModelVersion.objects.all())
    samples_per_prompt = serializers.IntegerField(
        min_value=1, max_value=selectors.MAX_SAMPLES_PER_PROMPT, required=False
    )
    max_new_tokens = serializers.IntegerField(min_value=1, max_value=1024, default=128)
    temperature = serializers.FloatField(min_value=0.0, max_value=2.0, default=0.7)
    best_of = serializers.IntegerField(min_value=1, max_value=services.MAX_BEST_OF, default=1)
    reward_version = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.all(), required=False, allow_null=True
    )


def preview_payload(preview: selectors.GenerationPreview) -> dict:
    return {
        "samples_per_prompt": preview.samples_per_prompt,
        "prompts": preview.prompts,
        "replies": preview.replies,
        "comparison_tasks": preview.comparison_tasks,
    }


class GenerationPreviewInputSerializer(serializers.Serializer):
    model_version = serializers.PrimaryKeyRelatedField(queryset=ModelVersion.objects.all())
    samples_per_prompt = serializers.IntegerField(
        min_value=1, max_value=selectors.MAX_SAMPLES_PER_PROMPT, required=False
    )


@extend_schema_view(
    get=extend_schema(
        operation_id="generation_preview",
        parameters=[GenerationPreviewInputSerializer],
        responses={
            200: inline_serializer(
                "GenerationPreview",
                {
                    # null: each prompt as many samples as its comparisons need
                    "samples_per_prompt": serializers.IntegerField(allow_null=True),
                    "prompts": serializers.IntegerField(),
                    "replies": serializers.IntegerField(),
                    "comparison_tasks": serializers.IntegerField(),
                },
            )
        },
    ),
)
class GenerationPreviewApi(APIView):
    def get(self, request, slug):
        """What a generation job would do if started now with ``?model_version=<id>``
        (and ``&samples_per_prompt=<n>``): how many prompts it answers, replies it writes
        and comparison tasks it creates. Counted by the code the job runs; stores nothing."""
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        data = offer_only_versions_of(
            GenerationPreviewInputSerializer(data=request.query_params), project
        )
        data.is_valid(raise_exception=True)
        preview = selectors.generation_preview(
            project=project,
            model_version=data.validated_data["model_version"],
            samples_per_prompt=data.validated_data.get("samples_per_prompt"),
        )
        return Response(preview_payload(preview))


@extend_schema_view(
    get=extend_schema(operation_id="generation_jobs_list", responses={200: OBJECT_LIST}),
    post=extend_schema(
        operation_id="generation_job_start",
        request=GenerationJobInputSerializer,
        responses={201: OBJECT},
    ),
)
class GenerationJobApi(APIView):
    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        services.generation_jobs_fail_stale(project=project)
        return Response([job_payload(job) for job in selectors.generation_jobs(project=project)])

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        data = offer_only_versions_of(GenerationJobInputSerializer(data=request.data), project)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        job = services.generation_job_start(
            project=project,
            model_version=fields["model_version"],
            user=request.user,
            samples_per_prompt=fields.get("samples_per_prompt"),
            best_of=fields["best_of"],
            reward_version=fields.get("reward_version"),
            params={
                "max_new_tokens": fields["max_new_tokens"],
                "temperature": fields["temperature"],
                "do_sample": fields["temperature"] > 0,
            },
        )
        return Response(job_payload(job), status=201)


@extend_schema_view(
    post=extend_schema(operation_id="generation_job_cancel", request=None, responses={200: OBJECT}),
)
class GenerationJobCancelApi(APIView):
    def post(self, request, slug, job_id):
        """Cancel a queued job now, or a running one before its next batch; 400 once the
        job has ended."""
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        job = get_object_or_404(GenerationJob, pk=job_id, project=project)
        return Response(job_payload(services.generation_job_cancel(job=job)))


@extend_schema_view(
    post=extend_schema(
        operation_id="model_version_release",
        request=registry_api.StateChangeInputSerializer,
        responses={200: OBJECT},
    ),
)
class ModelVersionReleaseApi(APIView):
    def post(self, request, slug, version_id):
        """Release an intermediate stage of a run (the SFT before DPO): it generates
        candidates and enters battles; 400 with a detail for any other version."""
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        version = registry_selectors.version_in_project(project=project, version_id=version_id)
        data = registry_api.StateChangeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        change = services.model_version_release(
            version=version, user=request.user, note=data.validated_data["note"], project=project
        )
        payload = registry_api.version_payload(
            registry_selectors.version_detail(version_id=version.pk, project=project)
        )
        return Response({**payload, "change": registry_api.change_payload(change)})
