"""API of projects (DRF): the caller's projects and a project's counts."""

from drf_spectacular.utils import (
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers as drf_serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.models import Role, TaskKind
from annotation.projects import selectors, services
from annotation.projects.guidelines import guidelines_publish
from annotation.projects.permissions import (
    LABEL,
    MANAGE,
    VIEW_DATA,
    project_for,
    projects_visible_to,
)
from config.api_schema import OBJECT
from config.errors import ServiceError

PROJECT_ITEM = {
    "slug": drf_serializers.SlugField(),
    "workspace": drf_serializers.SlugField(),
    "name": drf_serializers.CharField(),
    "description": drf_serializers.CharField(),
}


@extend_schema_view(
    get=extend_schema(
        operation_id="projects_list",
        responses={
            200: inline_serializer(
                "ProjectItem",
                {
                    "slug": drf_serializers.SlugField(),
                    "workspace": drf_serializers.SlugField(),
                    "name": drf_serializers.CharField(),
                    "description": drf_serializers.CharField(),
                },
                many=True,
            )
        },
    ),
    post=extend_schema(
        operation_id="projects_create",
        description="A workspace's admins (and superusers, who may name a new_workspace "
        "instead): a new project with them as its admin.",
        request=inline_serializer(
            "ProjectCreate",
            {
                "name": drf_serializers.CharField(),
                "slug": drf_serializers.SlugField(required=False),
                "workspace": drf_serializers.SlugField(required=False),
                "new_workspace": drf_serializers.CharField(required=False),
                "criteria": drf_serializers.ListField(
                    child=drf_serializers.CharField(), required=False
                ),
                "task_kinds": drf_serializers.ListField(
                    child=drf_serializers.ChoiceField(choices=TaskKind.values), required=False
                ),
                "guidelines": drf_serializers.CharField(required=False),
            },
        ),
        responses={201: inline_serializer("ProjectCreated", PROJECT_ITEM)},
    ),
)
class ProjectListApi(APIView):
    def post(self, request):
        return project_create_from_api(request)

    def get(self, request):
        projects = projects_visible_to(request.user).select_related("workspace").order_by("slug")
        return Response(
            [
                {
                    "slug": p.slug,
                    "workspace": p.workspace.slug,
                    "name": p.name,
                    "description": p.description,
                }
                for p in projects
            ]
        )


@extend_schema_view(
    get=extend_schema(operation_id="project_stats", responses={200: OBJECT}),
)
class ProjectStatsApi(APIView):
    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        return Response(selectors.project_overview(project=project))


def _guidelines_item(guidelines) -> dict:
    return {
        "version": guidelines.version,
        "text": guidelines.text,
        "created_by": guidelines.created_by.username if guidelines.created_by else None,
        "created_at": guidelines.created_at,
    }


GUIDELINES_ITEM = {
    "version": drf_serializers.IntegerField(),
    "text": drf_serializers.CharField(),
    "created_by": drf_serializers.CharField(allow_null=True),
    "created_at": drf_serializers.DateTimeField(),
}


@extend_schema_view(
    get=extend_schema(
        operation_id="guidelines_get",
        description="The current guidelines (null before any) and every version, newest first.",
        responses={
            200: inline_serializer(
                "GuidelinesHistory",
                {
                    "current": inline_serializer(
                        "GuidelinesCurrent", GUIDELINES_ITEM, allow_null=True
                    ),
                    "versions": inline_serializer("GuidelinesVersion", GUIDELINES_ITEM, many=True),
                },
            )
        },
    ),
    post=extend_schema(
        operation_id="guidelines_publish",
        description="Admins: publish the next version ({'text': markdown}).",
        request=inline_serializer("GuidelinesPublish", {"text": drf_serializers.CharField()}),
        responses={201: inline_serializer("GuidelinesPublished", GUIDELINES_ITEM)},
    ),
)
class GuidelinesApi(APIView):
    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=LABEL)
        versions = [entry["guidelines"] for entry in selectors.guidelines_history(project)]
        return Response(
            {
                "current": _guidelines_item(versions[0]) if versions else None,
                "versions": [_guidelines_item(guidelines) for guidelines in versions],
            }
        )

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        text = request.data.get("text") if hasattr(request.data, "get") else None
        published = guidelines_publish(project=project, text=text, author=request.user)
        return Response(_guidelines_item(published), status=201)


# --- creating a project and its members ---------------------------------------------------

ROLES = f"One of {', '.join(Role.values)}."
MEMBER_ITEM = {
    "user_id": drf_serializers.IntegerField(),
    "username": drf_serializers.CharField(),
    "role": drf_serializers.CharField(help_text=ROLES),
    "added_at": drf_serializers.DateTimeField(allow_null=True),
}


def _project_item(project) -> dict:
    return {
        "slug": project.slug,
        "workspace": project.workspace.slug,
        "name": project.name,
        "description": project.description,
    }


def _member_item(membership) -> dict:
    return {
        "user_id": membership.user_id,
        "username": membership.user.username,
        "role": membership.role,
        "added_at": membership.added_at,
    }


def _body(request) -> dict:
    if not isinstance(request.data, dict):
        raise ServiceError("Send a JSON object.")
    return request.data


def _list_field(body, name):
    value = body.get(name)
    if hasattr(body, "getlist") and value is not None:  # a form post repeats the field
        return body.getlist(name)
    return value


def project_create_from_api(request):
    body = _body(request)
    project = services.project_create(
        user=request.user,
        name=body.get("name"),
        slug=body.get("slug") or "",
        workspace_slug=body.get("workspace"),
        new_workspace=body.get("new_workspace") or "",
        criteria=_list_field(body, "criteria"),
        task_kinds=_list_field(body, "task_kinds"),
        guidelines=body.get("guidelines") or "",
    )
    return Response(_project_item(project), status=201)


@extend_schema_view(
    get=extend_schema(
        operation_id="members_list",
        responses={200: inline_serializer("MemberItem", MEMBER_ITEM, many=True)},
    ),
    post=extend_schema(
        operation_id="members_add",
        description="Admins: add an existing user, named by username or e-mail, with a role.",
        request=inline_serializer(
            "MemberAdd",
            {
                "user": drf_serializers.CharField(),
                "role": drf_serializers.CharField(help_text=ROLES),
            },
        ),
        responses={201: inline_serializer("MemberAdded", MEMBER_ITEM)},
    ),
)
class MemberListApi(APIView):
    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        rows = selectors.project_members(project=project)
        return Response([_member_item(membership) for membership in rows])

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        body = _body(request)
        membership = services.member_add(
            project=project, identifier=body.get("user"), role=body.get("role")
        )
        return Response(_member_item(membership), status=201)


@extend_schema_view(
    patch=extend_schema(
        operation_id="member_set_role",
        description="Admins: change a member's role (the last admin keeps theirs).",
        request=inline_serializer(
            "MemberRole", {"role": drf_serializers.CharField(help_text=ROLES)}
        ),
        responses={200: inline_serializer("MemberChanged", MEMBER_ITEM)},
    ),
    delete=extend_schema(
        operation_id="member_remove",
        description="Admins: remove a member (never the last admin).",
        responses={204: None},
    ),
)
class MemberApi(APIView):
    def patch(self, request, slug, user_id):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        role = _body(request).get("role")
        membership = services.member_set_role(project=project, user_id=user_id, role=role)
        return Response(_member_item(membership))

    def delete(self, request, slug, user_id):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        services.member_remove(project=project, user_id=user_id)
        return Response(status=204)
