"""Data engine API (DRF): import dataset files, curate versions, read and export them.
Thin callers of uploads.py, versions.py and exports.py; a ServiceError they raise becomes
a 4xx ``{"detail": ...}`` (config/api_errors.py)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers as drf_serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.datasets import uploads, writers
from annotation.datasets.formats.readers import FORMATS
from annotation.datasets.pages import DOWNLOAD_CONTAINERS, version_file_response
from annotation.datasets.versions import (
    AI_CHOICES,
    DEDUPE_CHOICES,
    KINDS,
    PII_CHOICES,
    curate,
    dataset_version_create,
    parse_recipe,
)
from annotation.models import DatasetVersion, PromptImport
from annotation.projects.permissions import MANAGE, VIEW_DATA, can, project_for
from config.errors import NotFound, ServiceError
from config.parsers import SafeJSONParser

TRUE_WORDS = {"1", "true", "yes", "on"}
TEXT_FIELDS = ("kind", "ai", "pii", "dedupe", "quality", "licence")
LIST_FIELDS = ("sources", "languages", "mix")  # a list of strings, or one comma-separated


def _is_text_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def recipe_fields(body) -> dict:
    """The recipe's fields of a JSON body, as parse_recipe takes them; ServiceError for a
    body that is not a recipe."""
    if not isinstance(body, dict) or not isinstance(body.get("kind"), str):
        raise ServiceError(
            "Send a JSON object with the recipe: kind (one of "
            f"{', '.join(KINDS)}), name, and any of {', '.join(TEXT_FIELDS[1:] + LIST_FIELDS)}."
        )
    fields = {}
    for field in TEXT_FIELDS + LIST_FIELDS:
        value = body.get(field)
        if value is None:
            continue
        if not (isinstance(value, str) or field in LIST_FIELDS and _is_text_list(value)):
            kind = "a string" if field in TEXT_FIELDS else "a list of strings"
            raise ServiceError(f"The recipe's {field!r} must be {kind}.")
        fields[field] = value
    return fields


def import_data(batch: PromptImport) -> dict:
    return {
        "id": batch.pk,
        "source": batch.source,
        "format": batch.format,
        "file_name": batch.file_name,
        "record_count": batch.record_count,
        "prompt_count": batch.prompt_count,
        "existing_count": batch.existing_count,
        "response_count": batch.response_count,
        "judgment_count": batch.judgment_count,
        "created_by": batch.created_by.username if batch.created_by else None,
        "created_at": batch.created_at.isoformat(),
    }


def version_data(version: DatasetVersion, *, full: bool = False) -> dict:
    data = {
        "name": version.name,
        "number": version.number,
        "kind": version.kind,
        "content_hash": version.content_hash,
        "row_count": version.row_count,
        "licence": version.licence,
        "created_by": version.created_by.username if version.created_by else None,
        "created_at": version.created_at.isoformat(),
        "formats": list(writers.FORMATS_OF_KIND.get(version.kind, ())),
    }
    if full:
        data |= {
            "recipe": version.recipe,
            "report": version.report,
            "stats": version.stats,
            "card": version.card,
            "parents": [
                {"name": parent.name, "number": parent.number}
                for parent in version.parents.order_by("name", "number")
            ],
        }
    return data


class DataImportSerializer(drf_serializers.Serializer):
    id = drf_serializers.IntegerField()
    source = drf_serializers.CharField()
    format = drf_serializers.CharField()
    file_name = drf_serializers.CharField()
    record_count = drf_serializers.IntegerField()
    prompt_count = drf_serializers.IntegerField()
    existing_count = drf_serializers.IntegerField()
    response_count = drf_serializers.IntegerField()
    judgment_count = drf_serializers.IntegerField()
    created_by = drf_serializers.CharField(allow_null=True)
    created_at = drf_serializers.DateTimeField()


PREVIEW_RESULT = inline_serializer(
    "DataImportPreview",
    {
        "format": drf_serializers.CharField(),
        "rows": drf_serializers.ListField(child=drf_serializers.DictField()),
    },
)


class DatasetVersionSummarySerializer(drf_serializers.Serializer):
    name = drf_serializers.CharField()
    number = drf_serializers.IntegerField()
    kind = drf_serializers.CharField()
    content_hash = drf_serializers.CharField()
    row_count = drf_serializers.IntegerField()
    licence = drf_serializers.CharField()
    created_by = drf_serializers.CharField(allow_null=True)
    created_at = drf_serializers.DateTimeField()
    formats = drf_serializers.ListField(child=drf_serializers.CharField())


class DatasetVersionDetailSerializer(DatasetVersionSummarySerializer):
    recipe = drf_serializers.DictField()
    report = drf_serializers.ListField(child=drf_serializers.DictField())
    stats = drf_serializers.DictField()
    card = drf_serializers.CharField()
    parents = drf_serializers.ListField(child=drf_serializers.DictField())


DRY_RUN_RESULT = inline_serializer(
    "DatasetVersionDryRun",
    {
        "row_count": drf_serializers.IntegerField(),
        "content_hash": drf_serializers.CharField(),
        "stats": drf_serializers.DictField(),
        "report": drf_serializers.ListField(child=drf_serializers.DictField()),
    },
)
RECIPE_REQUEST = inline_serializer(
    "DatasetVersionRecipe",
    {
        "name": drf_serializers.CharField(),
        "kind": drf_serializers.ChoiceField(choices=KINDS),
        "sources": drf_serializers.ListField(child=drf_serializers.CharField(), required=False),
        "ai": drf_serializers.ChoiceField(choices=AI_CHOICES, required=False, allow_null=True),
        "pii": drf_serializers.ChoiceField(choices=PII_CHOICES, required=False),
        "dedupe": drf_serializers.ChoiceField(choices=DEDUPE_CHOICES, required=False),
        "languages": drf_serializers.ListField(child=drf_serializers.CharField(), required=False),
        "quality": drf_serializers.CharField(required=False),
        "mix": drf_serializers.ListField(child=drf_serializers.CharField(), required=False),
        "licence": drf_serializers.CharField(required=False),
        "dry_run": drf_serializers.BooleanField(required=False),
    },
)


@extend_schema_view(
    get=extend_schema(
        operation_id="data_imports_list",
        responses={200: DataImportSerializer(many=True)},
    ),
    post=extend_schema(
        operation_id="data_import",
        request={
            "multipart/form-data": inline_serializer(
                "DataImportUpload",
                {
                    "file": drf_serializers.FileField(),
                    "format": drf_serializers.ChoiceField(choices=FORMATS, required=False),
                    "source": drf_serializers.CharField(required=False),
                    "preview": drf_serializers.BooleanField(required=False),
                },
            )
        },
        responses={201: DataImportSerializer, 200: PREVIEW_RESULT},
    ),
)
class DataImportsApi(APIView):
    """GET: the project's imports, newest first (researchers read the source names their
    recipes select). POST (admins) a dataset file (``file``; ``format``, default auto;
    ``source``, default the file's name): imported whole or not at all (201), or with
    ``preview=true`` how its first records map, importing nothing (200)."""

    parser_classes = [MultiPartParser, FormParser]

    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        batches = (
            PromptImport.objects.filter(project=project)
            .select_related("created_by")
            .order_by("-created_at")
        )
        return Response([import_data(batch) for batch in batches])

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        upload = request.FILES.get("file")
        if upload is None:
            raise ServiceError("Send the dataset as a multipart file field named 'file'.")
        format = request.data.get("format") or "auto"
        if format not in FORMATS:
            raise ServiceError(f"Unknown format {format!r}; choose one of {', '.join(FORMATS)}.")
        stored = uploads.upload_save(project=project, upload=upload)
        if str(request.data.get("preview", "")).lower() in TRUE_WORDS:
            try:
                chosen, rows = uploads.upload_preview(stored, format)
            finally:
                uploads.upload_discard(project=project, token=stored.token)
            return Response(
                {"format": chosen, "rows": [{"raw": raw, **summary} for raw, summary in rows]}
            )
        batch = uploads.upload_import(
            project=project,
            stored=stored,
            format=format,
            source=request.data.get("source") or "",
            user=request.user,
        )
        return Response(import_data(batch), status=201)


@extend_schema_view(
    get=extend_schema(
        operation_id="dataset_versions_list",
        responses={200: DatasetVersionSummarySerializer(many=True)},
    ),
    post=extend_schema(
        operation_id="dataset_version_create",
        request=RECIPE_REQUEST,
        responses={
            201: DatasetVersionDetailSerializer,
            200: PolymorphicProxySerializer(
                component_name="DatasetVersionOrDryRun",
                serializers=[DatasetVersionDetailSerializer, DRY_RUN_RESULT],
                resource_type_field_name=None,
            ),
        },
        description="With dry_run true: 200 with row_count, content_hash, stats and report; "
        "nothing is stored.",
    ),
)
class DatasetVersionsApi(APIView):
    """GET: the project's dataset versions. POST a recipe and a name: the version (201), the
    one that already holds the same rows (200), or with ``dry_run: true`` what the recipe
    would keep and what each step would remove or change (200, nothing stored)."""

    parser_classes = [SafeJSONParser]

    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        versions = (
            DatasetVersion.objects.filter(project=project)
            .select_related("created_by")
            .order_by("name", "-number")
        )
        return Response([version_data(version) for version in versions])

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        body = request.data
        recipe = parse_recipe(
            project,
            **recipe_fields(body),
            may_keep_pii=can(user=request.user, project=project, capability=MANAGE),
        )
        if body.get("dry_run") is True:
            curated = curate(project, recipe)
            return Response(
                {
                    "row_count": curated.row_count,
                    "content_hash": curated.content_hash,
                    "stats": curated.stats,
                    "report": curated.report,
                }
            )
        version, created = dataset_version_create(
            project=project, name=str(body.get("name") or ""), recipe=recipe, user=request.user
        )
        return Response(version_data(version, full=True), status=201 if created else 200)


def _version(request, slug: str, name: str, number: int) -> DatasetVersion:
    project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
    version = (
        DatasetVersion.objects.filter(project=project, name=name, number=number)
        .select_related("created_by")
        .first()
    )
    if version is None:
        raise NotFound(f"No dataset version {name} v{number} in project {slug}.")
    return version


@extend_schema_view(
    get=extend_schema(
        operation_id="dataset_version_detail", responses={200: DatasetVersionDetailSerializer}
    )
)
class DatasetVersionApi(APIView):
    """GET: a version's metadata, recipe, curation report, stats, card and parents."""

    def get(self, request, slug, name, number):
        return Response(version_data(_version(request, slug, name, number), full=True))


@extend_schema_view(
    get=extend_schema(
        operation_id="dataset_version_export",
        parameters=[
            OpenApiParameter("format", str, enum=list(writers.EXPORT_FORMATS), required=True),
            OpenApiParameter("container", str, enum=list(DOWNLOAD_CONTAINERS)),
        ],
        responses={
            (200, "application/jsonl"): OpenApiTypes.BINARY,
            (200, "application/vnd.apache.parquet"): OpenApiTypes.BINARY,
            (200, "text/csv"): OpenApiTypes.BINARY,
        },
    )
)
class DatasetVersionExportApi(APIView):
    """GET ?format=dpo|sft|...&container=jsonl|parquet|csv: the version in a TRL dataset
    type, as a file ``datasets.load_dataset`` reads (csv: flat text cells for spreadsheets,
    formula-escaped, for the tabular formats). A format the version's kind cannot give is
    refused (400) naming the ones it can."""

    def get(self, request, slug, name, number):
        version = _version(request, slug, name, number)
        return version_file_response(
            version,
            request.query_params.get("format", ""),
            request.query_params.get("container", "jsonl"),
        )
