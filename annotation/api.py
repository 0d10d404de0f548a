from rest_framework import serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import exports, selectors, services
from annotation.errors import ServiceError
from annotation.forms import MAX_IMPORT_BYTES
from annotation.permissions import LABEL, MANAGE, VIEW_DATA, project_for, projects_visible_to
from annotation.rendering import render_markdown
from annotation.views import export_response


class ProjectListApi(APIView):
    def get(self, request):
        projects = projects_visible_to(request.user).order_by("slug")
        return Response(
            [{"slug": p.slug, "name": p.name, "description": p.description} for p in projects]
        )


class PromptImportApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        upload = request.FILES.get("file")
        if upload is None:
            raise ServiceError("Send the prompts as a multipart file field named 'file'.")
        if upload.size > MAX_IMPORT_BYTES:
            raise ServiceError("The file is larger than 20 MB; split it.")
        batch = services.prompts_import(
            project=project, file_name=upload.name, content=upload.read(), user=request.user
        )
        return Response({"import_id": batch.pk, "prompt_count": batch.prompt_count}, status=201)


def _response_payload(response) -> dict:
    return {"id": response.pk, "text": response.text, "html": render_markdown(response.text)}


class TaskNextApi(APIView):
    """The caller's current comparison task (assigning one if needed); 204 when none is left.
    Responses come in display order, `left` then `right`; the model is not named."""

    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        assignment = services.assignment_next(project=project, labeler=request.user)
        if assignment is None:
            return Response(status=204)
        prompt = assignment.task.prompt
        return Response(
            {
                "assignment_id": assignment.pk,
                "task_id": assignment.task_id,
                "prompt": {"id": prompt.pk, "text": prompt.text},
                "left": _response_payload(assignment.left_response),
                "right": _response_payload(assignment.right_response),
                "expires_at": assignment.expires_at,
            }
        )


class ComparisonInputSerializer(serializers.Serializer):
    assignment_id = serializers.IntegerField()
    choice = serializers.ChoiceField(choices=sorted(services.CHOICE_BY_SIDE))
    client_id = serializers.UUIDField()
    time_spent_ms = serializers.IntegerField(min_value=0, max_value=86_400_000, default=0)


class ComparisonSubmitApi(APIView):
    """Judge an assignment: choice is the side the labeler picked (left/right/tie/both_bad).
    Resending the same client_id returns the stored judgment (200) instead of a new one."""

    def post(self, request, slug):
        project_for(user=request.user, slug=slug, capability=LABEL)
        data = ComparisonInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        before = selectors.comparison_exists_for_client(client_id=fields["client_id"])
        comparison = services.comparison_submit(
            labeler=request.user,
            assignment_id=fields["assignment_id"],
            side=fields["choice"],
            client_id=fields["client_id"],
            time_spent_ms=fields["time_spent_ms"],
        )
        return Response(
            {
                "id": comparison.pk,
                "client_id": str(comparison.client_id),
                "choice": comparison.choice,
                "response_a": comparison.response_a_id,
                "response_b": comparison.response_b_id,
                "shown_order": comparison.shown_order,
                "created_at": comparison.created_at,
            },
            status=200 if before else 201,
        )


class PreferenceExportApi(APIView):
    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        export_format = request.query_params.get("format", "dpo")
        if export_format not in exports.FORMATS:
            raise ServiceError(
                f"Unknown format {export_format!r}; choose one of {', '.join(exports.FORMATS)}."
            )
        return export_response(project, export_format)


class ProjectStatsApi(APIView):
    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        return Response(selectors.project_overview(project=project))
