"""API of the review area (DRF): sending a share of an import's judgments to review. The
AI labels' twin is ReviewAiFillApi (annotation/judges/views.py)."""

from drf_spectacular.utils import extend_schema, extend_schema_view, inline_serializer
from rest_framework import serializers as drf_serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.projects.permissions import MANAGE, project_for
from annotation.review import imports
from config.api_schema import OBJECT


@extend_schema_view(
    post=extend_schema(
        operation_id="review_import_fill",
        request=inline_serializer(
            "ReviewImportFill",
            {
                "source_import": drf_serializers.IntegerField(),
                "share": drf_serializers.FloatField(required=False),
                "seed": drf_serializers.IntegerField(required=False),
            },
        ),
        responses={200: OBJECT},
    ),
)
class ReviewImportFillApi(APIView):
    """POST {source_import, share, seed}: flag a seeded share of one import's judgments for
    human review; answers how many were newly sent and how many imported ones now wait."""

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        fields = imports.parse_import_fill(request.data)
        flagged = imports.send_import_to_review(project=project, **fields)
        waiting = imports.import_review_waiting(project=project)
        return Response({"flagged": flagged, "waiting": waiting, **fields})
