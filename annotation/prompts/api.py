"""API of the prompt pool (DRF): thin callers of annotation/prompts/services.py."""

from drf_spectacular.utils import (
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers as drf_serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.projects.permissions import MANAGE, project_for
from annotation.prompts import services
from annotation.prompts.forms import MAX_IMPORT_BYTES
from config.errors import ServiceError


@extend_schema_view(
    post=extend_schema(
        operation_id="prompts_import",
        request={
            "multipart/form-data": inline_serializer(
                "PromptImportUpload", {"file": drf_serializers.FileField()}
            )
        },
        responses={
            201: inline_serializer(
                "PromptImportResult",
                {
                    "import_id": drf_serializers.IntegerField(),
                    "prompt_count": drf_serializers.IntegerField(),
                    "new_count": drf_serializers.IntegerField(),
                    "existing_count": drf_serializers.IntegerField(),
                },
            )
        },
    ),
)
class PromptImportApi(APIView):
    """POST a JSONL or CSV file (field ``file``): its new prompts are added, those already
    in the project are counted (``existing_count``) and not added again."""

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
        # prompt_count: the prompts the file added (new_count says the same, by its name).
        return Response(
            {
                "import_id": batch.pk,
                "prompt_count": batch.prompt_count,
                "new_count": batch.prompt_count,
                "existing_count": batch.existing_count,
            },
            status=201,
        )
