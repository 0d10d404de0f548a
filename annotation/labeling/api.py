from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.labeling import changes, services
from annotation.labeling.rendering import render_markdown
from annotation.labeling.views import int_or_none
from annotation.projects.permissions import LABEL, project_for
from config.api_schema import OBJECT
from config.errors import ServiceError


def _response_payload(response) -> dict:
    return {"id": response.pk, "text": response.text, "html": render_markdown(response.text)}


def assignment_payload(assignment) -> dict:
    task = assignment.task
    responses = [_response_payload(r) for r in assignment.shown_responses()]
    payload = {
        "assignment_id": assignment.pk,
        "task_id": task.pk,
        "kind": task.kind,
        "prompt": {"id": task.prompt_id, "text": task.prompt.text},
        "context": task.context,
        "responses": responses,
        "criteria": task.project.criteria,
        "expires_at": assignment.expires_at,
    }
    if task.kind == "comparison":
        payload["left"], payload["right"] = responses
    return payload


@extend_schema_view(
    get=extend_schema(
        operation_id="task_next",
        parameters=[OpenApiParameter("after", int)],
        responses={200: OBJECT, 204: None},
    ),
)
class TaskNextApi(APIView):
    """The caller's current task (assigning one if needed); 204 when none is left.
    `?after=<assignment_id>` gives the task after that one, so a client can prefetch it.
    Responses come in display order; the models are not named."""

    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        raw_after = request.query_params.get("after")
        after = int_or_none(raw_after)
        if raw_after and after is None:
            raise ServiceError("after must be an assignment id.")
        assignment = services.assignment_next(project=project, labeler=request.user, after=after)
        if assignment is None:
            return Response(status=204)
        assignment.task.project = project  # already loaded; saves a query per task
        return Response(assignment_payload(assignment))


class ChangeEnvelopeSerializer(serializers.Serializer):
    client_id = serializers.UUIDField()
    time_spent_ms = serializers.IntegerField(min_value=0, max_value=86_400_000, default=0)


class JudgmentEnvelopeSerializer(ChangeEnvelopeSerializer):
    assignment_id = serializers.IntegerField()


@extend_schema_view(
    post=extend_schema(
        operation_id="judgment_submit",
        request=JudgmentEnvelopeSerializer,
        responses={200: OBJECT, 201: OBJECT},
    ),
)
class JudgmentSubmitApi(APIView):
    """Judge an assignment. Besides the envelope (assignment_id, client_id, time_spent_ms)
    the body carries the kind's own fields, e.g. for a comparison `choice` (left, right,
    tie, both_bad), `strength` 1-4, `rationale`, `criterion_<name>`. Resending the same
    client_id returns the stored judgment (200) instead of storing a new one (201)."""

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        envelope = JudgmentEnvelopeSerializer(data=request.data)
        envelope.is_valid(raise_exception=True)
        fields = envelope.validated_data
        judgment, created = services.judgment_record(
            project=project,
            labeler=request.user,
            assignment_id=fields["assignment_id"],
            data=request.data,
            client_id=fields["client_id"],
            time_spent_ms=fields["time_spent_ms"],
        )
        return Response(judgment_payload(judgment), status=201 if created else 200)


def judgment_payload(judgment) -> dict:
    payload = {
        "id": judgment.pk,
        "client_id": str(judgment.client_id),
        "kind": judgment.kind,
        "task_id": judgment.task_id,
        "shown_order": judgment.shown_order,
        "time_spent_ms": judgment.time_spent_ms,
        "created_at": judgment.created_at,
    }
    kind_fields = {
        "comparison": ("response_a_id", "response_b_id", "choice", "strength", "rationale",
                       "criteria_choices"),
        "ranking": ("ranking", "all_bad", "rationale"),
        "rating": ("rated_response_id", "scores", "flags", "rationale"),
        "demonstration": ("text", "edited_from_id", "edit_diff"),
    }  # fmt: skip
    for name in kind_fields.get(judgment.kind, ()):
        payload[name.removesuffix("_id")] = getattr(judgment, name)
    return payload


class SkipInputSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=services.MAX_SKIP_REASON)


@extend_schema_view(
    post=extend_schema(
        operation_id="assignment_skip",
        request=SkipInputSerializer,
        responses={
            200: inline_serializer(
                "AssignmentSkipped",
                {"assignment_id": serializers.IntegerField(), "status": serializers.CharField()},
            )
        },
    ),
)
class AssignmentSkipApi(APIView):
    def post(self, request, slug, assignment_id):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        data = SkipInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        assignment = services.assignment_skip(
            project=project,
            labeler=request.user,
            assignment_id=assignment_id,
            reason=data.validated_data["reason"],
        )
        return Response({"assignment_id": assignment.pk, "status": assignment.status})


@extend_schema_view(
    post=extend_schema(
        operation_id="judgment_change",
        request=ChangeEnvelopeSerializer,
        responses={200: OBJECT, 201: OBJECT},
    ),
)
class JudgmentChangeApi(APIView):
    """Change one of your recent judgments: the body carries a new answer with the kind's
    own fields in shown order, as for a first judgment, plus client_id and time_spent_ms.
    It is stored as a new judgment that supersedes the old one (201); resending the same
    client_id returns it (200)."""

    def post(self, request, slug, judgment_id):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        envelope = ChangeEnvelopeSerializer(data=request.data)
        envelope.is_valid(raise_exception=True)
        fields = envelope.validated_data
        judgment, created = changes.judgment_change(
            project=project,
            labeler=request.user,
            judgment_id=judgment_id,
            data=request.data,
            client_id=fields["client_id"],
            time_spent_ms=fields["time_spent_ms"],
        )
        payload = {**judgment_payload(judgment), "supersedes": judgment.supersedes_id}
        return Response(payload, status=201 if created else 200)
