import hashlib
from pathlib import Path

from django.core.exceptions import PermissionDenied
from django.db.models import Case, Exists, F, OuterRef, Prefetch, Q, Subquery, When
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404

from config.errors import NotFound
from models_registry.models import ApiKey, ModelVersion, ProjectModelState, StateChange

# --- a version's state in a project -----------------------------------------------------
#
# Serving state is per project: a project's ProjectModelState row for a version, else the
# version's default (``ModelVersion.state`` and ``promoted_at``, what registration set).
# ``project=None`` reads the defaults: only the routes without a project in their URL do.


def with_project_state(rows, *, project):
    """``rows`` (versions) annotated with ``project_state`` and ``project_promoted_at``,
    their state and promotion time in ``project``, to filter and order by."""
    if project is None:
        return rows.annotate(project_state=F("state"), project_promoted_at=F("promoted_at"))
    here = ProjectModelState.objects.filter(project=project, version=OuterRef("pk"))
    return visible_to(project.workspace, rows).annotate(
        project_state=Coalesce(Subquery(here.values("state")[:1]), F("state")),
        project_promoted_at=Case(
            When(Exists(here), then=Subquery(here.values("promoted_at")[:1])),
            default=F("promoted_at"),
        ),
    )


def overlay_project_state(versions, *, project):
    """Set ``state`` and ``promoted_at`` of the fetched ``versions`` to what they are in
    ``project`` (one query), so that pages and payloads reading ``version.state`` show the
    project's. Returns them as a list. An overlaid version is for reading: the services
    fetch it afresh and never save ``state`` from it."""
    versions = list(versions)
    if project is None or not versions:
        return versions
    rows = {
        row.version_id: row
        for row in ProjectModelState.objects.filter(
            project=project, version__in=[version.pk for version in versions]
        )
    }
    for version in versions:
        row = rows.get(version.pk)
        if row is not None:
            version.state, version.promoted_at = row.state, row.promoted_at
    return versions


def retired_in(*, project):
    """The versions retired in ``project`` (a queryset, for ``__in`` filters)."""
    return with_project_state(ModelVersion.objects.all(), project=project).filter(
        project_state=ModelVersion.State.RETIRED
    )


def versions(*, project, kind: str | None = None, rows=None) -> list[ModelVersion]:
    """Every version ``project``'s workspace may see (or of ``rows``), policies and reward
    models or those of one kind, each with its state in ``project`` (None: the default
    states)."""
    if rows is None:
        rows = versions_in_sight(project)
    rows = rows.select_related("parent").prefetch_related("children")
    return overlay_project_state(rows.filter(kind=kind) if kind else rows, project=project)


def latest_reward_model(*, project) -> ModelVersion | None:
    """The reward model that judges new work in ``project`` (active pairing, a training
    run's win rate): the newest reward model that is neither retired there nor an
    intermediate stage of a run, or None. A retired version was taken out of use on
    purpose, so it judges nothing new."""
    return (
        with_project_state(
            ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD, intermediate=False),
            project=project,
        )
        .exclude(project_state=ModelVersion.State.RETIRED)
        .order_by("-created_at", "-id")
        .first()
    )


def servable_versions(*, project, kind: str | None = None):
    """Versions chat and the arena of ``project`` may use: every one not retired there (of
    ``kind``, if given), newest first. An intermediate stage of a run (the SFT before DPO)
    is left out until an admin releases it."""
    rows = with_project_state(ModelVersion.objects.exclude(intermediate=True), project=project)
    rows = rows.exclude(project_state=ModelVersion.State.RETIRED)
    if kind:
        rows = rows.filter(kind=kind)
    return rows.select_related("parent").order_by("-created_at", "-id")


def servable_versions_for_user(*, user, kind: str | None = None, workspace=None):
    """Versions the OpenAI-compatible API answers ``user`` with: those not retired in at
    least one project the user is a member of (a superuser: any project), intermediate
    stages left out, newest first. Nothing for a user in no project."""
    from django.apps import apps

    projects = apps.get_model("annotation", "Project").objects.all()
    if not user.is_superuser:
        projects = projects.filter(memberships__user=user)
    if workspace is not None:  # only the projects of that workspace (an API key's scope)
        projects = projects.filter(workspace=workspace)
    retired_there = ProjectModelState.objects.filter(
        project=OuterRef("pk"), version=OuterRef(OuterRef("pk")), state=ModelVersion.State.RETIRED
    )
    live_row = ProjectModelState.objects.filter(
        project__in=projects.values("pk"), version=OuterRef("pk")
    ).exclude(state=ModelVersion.State.RETIRED)
    # A project without a row sees the default state; one with a row sees the row's.
    default_here = ~Q(state=ModelVersion.State.RETIRED) & Exists(
        projects.filter(~Exists(retired_there))
    )
    rows = ModelVersion.objects.exclude(intermediate=True).filter(default_here | Exists(live_row))
    if kind:
        rows = rows.filter(kind=kind)
    return rows.select_related("parent").order_by("-created_at", "-id")


def version_by_reference(reference: str, *, among=None) -> ModelVersion | None:
    """The version a client names: by ``model_id``, or by the readable name that served as
    the id before model ids existed (old scripts and API clients keep working)."""
    rows = ModelVersion.objects.all() if among is None else among
    return rows.filter(model_id=reference).first() or rows.filter(name=reference).first()


def api_key_hash(secret: str) -> str:
    """What is stored of an API key: its SHA-256, hex (see ``ApiKey``)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_by_secret(secret: str) -> ApiKey | None:
    """The key row whose secret this is (revoked ones too: the caller says why it fails)."""
    return (
        ApiKey.objects.select_related("user", "workspace")
        .filter(key_hash=api_key_hash(secret))
        .first()
    )


def api_keys_of(*, user):
    """The user's API keys, newest first, revoked ones included (never a secret: none is
    stored)."""
    return ApiKey.objects.filter(user=user).select_related("workspace")


def servable_versions_for_request(*, user, api_key: ApiKey | None = None, kind=None):
    """What ``/v1`` answers: with an API key, the versions the key's workspace may see that
    are not retired in a project of that workspace the user is in; without one (a browser
    session), those any of the user's workspaces may see, not retired in one of the user's
    projects."""
    from annotation.projects.permissions import workspaces_of

    if api_key is not None:
        rows = servable_versions_for_user(user=user, kind=kind, workspace=api_key.workspace)
        return visible_to(api_key.workspace, rows)
    rows = servable_versions_for_user(user=user, kind=kind)
    return visible_to_any(list(workspaces_of(user)), rows)


# --- registry: incumbent, version page, lineage ----------------------------------------


def incumbent(*, project) -> ModelVersion | None:
    """The policy promoted last among those serving in ``project``: the one a candidate
    there has to beat (never an intermediate stage of a run, which cannot be promoted).
    Its ``state`` and ``promoted_at`` are the project's."""
    found = (
        with_project_state(
            ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY, intermediate=False),
            project=project,
        )
        .filter(project_state=ModelVersion.State.SERVING)
        .order_by(F("project_promoted_at").desc(nulls_last=True), "-id")
        .first()
    )
    return overlay_project_state([found], project=project)[0] if found else None


def changes_in(*, project):
    """The state changes ``project`` shows: its own, and those made before states were
    per project (no project: they changed the defaults every project starts from).
    ``project=None``: every change."""
    rows = StateChange.objects.select_related("user", "incumbent", "project")
    if project is None:
        return rows
    return rows.filter(Q(project=project) | Q(project__isnull=True))


def version_detail(*, version_id: int, project) -> ModelVersion:
    """A version with what its page shows: parent, training run and its snapshot, children
    and state history, its state and its children's being those in ``project`` (None: the
    defaults and every change). Http404 when there is none or ``project`` may not see it;
    its children are those ``project`` sees."""
    in_sight = versions_in_sight(project)
    version = get_object_or_404(
        in_sight.select_related(
            "parent", "training_run__project", "training_run__snapshot"
        ).prefetch_related(
            Prefetch("children", queryset=in_sight.order_by("created_at", "id")),
            Prefetch("changes", queryset=changes_in(project=project)),
        ),
        pk=version_id,
    )
    overlay_project_state([version, *version.children.all()], project=project)
    return version


def _file_sizes(folder: str) -> dict:
    """The safetensors files of a model folder with their sizes in bytes."""
    if not folder:
        return {"path": "", "exists": False, "files": [], "total": 0}
    path = Path(folder)
    files = (
        [
            {"name": file.name, "bytes": file.stat().st_size}
            for file in sorted(path.glob("*.safetensors"))
            if file.is_file()
        ]
        if path.is_dir()
        else []
    )
    return {
        "path": folder,
        "exists": path.is_dir(),
        "files": files,
        "total": sum(file["bytes"] for file in files),
    }


def artifacts(version: ModelVersion) -> dict:
    """What the version's weights are (full weights or a LoRA adapter on a base) and the
    sizes of their safetensors files, read from disk."""
    return {
        "form": "LoRA adapter" if version.adapter_path else "full weights",
        "base": _file_sizes(version.base_path),
        "adapter": _file_sizes(version.adapter_path) if version.adapter_path else None,
    }


LINEAGE_COLUMN = 240  # px between generations (left to right)
LINEAGE_ROW = 56  # px between leaves (top to bottom)
LINEAGE_NODE = (200, 38)  # node box width, height
LINEAGE_MARGIN = 16
STATE_COLOURS = {
    ModelVersion.State.CANDIDATE: "#d97706",
    ModelVersion.State.SERVING: "#059669",
    ModelVersion.State.RETIRED: "#9ca3af",
}


def lineage_label(version: ModelVersion, parent: ModelVersion | None) -> str:
    """What a node adds to its parent: a trained version is named "<parent> / <step>", and
    the tree already shows the parent, so the node says "<step>" ("DPO run 2"); the full
    name and the model id are in its tooltip."""
    prefix = f"{parent.name} / " if parent else ""
    if prefix and version.name.startswith(prefix):
        return version.name[len(prefix) :]
    return version.name


def lineage_graph(*, project) -> dict:
    """Every version, coloured by its state in ``project``, as a node of a forest (roots:
    versions without a parent), laid out for an SVG: generations from left to right, each
    leaf on its own row, a parent centred on its children. Returns ``{"nodes", "edges",
    "width", "height"}``; a node carries the version and its box (x, y of the top-left
    corner; cx, cy of the centre), an edge the coordinates from the parent's right side to
    the child's left."""
    rows = overlay_project_state(
        versions_in_sight(project).order_by("created_at", "id"), project=project
    )
    by_id = {version.pk: version for version in rows}
    children: dict[int | None, list[ModelVersion]] = {}
    for version in rows:
        parent = version.parent_id if version.parent_id in by_id else None
        children.setdefault(parent, []).append(version)
    width, height = LINEAGE_NODE
    placed: dict[int, dict] = {}
    next_row = 0

    def place(version: ModelVersion, depth: int) -> float:
        nonlocal next_row
        kids = [kid for kid in children.get(version.pk, []) if kid.pk not in placed]
        placed[version.pk] = {}  # claimed: a corrupted cycle cannot recurse forever
        if kids:
            centres = [place(kid, depth + 1) for kid in kids]
            row = (centres[0] + centres[-1]) / 2
        else:
            row, next_row = next_row, next_row + 1
        placed[version.pk] = {"version": version, "depth": depth, "row": row}
        return row

    for root in children.get(None, []):
        place(root, 0)
    for version in rows:  # versions on a cycle of parents (never made by the app)
        if version.pk not in placed:
            place(version, 0)
    nodes = []
    for entry in sorted(placed.values(), key=lambda e: (e["depth"], e["row"])):
        x = LINEAGE_MARGIN + entry["depth"] * LINEAGE_COLUMN
        y = LINEAGE_MARGIN + entry["row"] * LINEAGE_ROW
        version = entry["version"]
        nodes.append(
            {
                "version": version,
                "x": round(x, 1),
                "y": round(y, 1),
                "cx": round(x + width / 2, 1),
                "cy": round(y + height / 2, 1),
                "text_x": round(x + 12, 1),
                "name_y": round(y + 16, 1),
                "method_y": round(y + 31, 1),
                "colour": STATE_COLOURS[version.state],
                "label": lineage_label(version, by_id.get(version.parent_id)),
            }
        )
    position = {node["version"].pk: node for node in nodes}
    edges = [
        {
            "parent": version.parent_id,
            "child": version.pk,
            "x1": position[version.parent_id]["x"] + width,
            "y1": position[version.parent_id]["cy"],
            "x2": position[version.pk]["x"],
            "y2": position[version.pk]["cy"],
        }
        for version in rows
        if version.parent_id in position
    ]
    depth = max((entry["depth"] for entry in placed.values()), default=0)
    return {
        "nodes": nodes,
        "edges": edges,
        "node_width": width,
        "node_height": height,
        "width": 2 * LINEAGE_MARGIN + depth * LINEAGE_COLUMN + width,
        "height": 2 * LINEAGE_MARGIN + max(next_row - 1, 0) * LINEAGE_ROW + height,
        "states": [
            {"state": label, "colour": STATE_COLOURS[value]}
            for value, label in ModelVersion.State.choices
        ],
    }


# --- workspaces: who may see a version -------------------------------------------------


def versions_in_sight(project):
    """What ``project`` may see: the versions its workspace may (every one without a
    project, for the unscoped commands)."""
    return ModelVersion.objects.all() if project is None else visible_to(project.workspace)


def visible_to(workspace, rows=None):
    """The versions ``workspace`` may see, serve and train from: its own, those another
    workspace shared with it, and those the operator installed (no owner)."""
    return visible_to_any([workspace] if workspace is not None else [], rows)


def visible_to_any(workspaces, rows=None):
    """The versions any of ``workspaces`` may see (``visible_to`` for several)."""
    rows = ModelVersion.objects.all() if rows is None else rows
    ids = [workspace.pk for workspace in workspaces]
    shared = ModelVersion.objects.filter(shared_with__in=ids).values("pk")
    return rows.filter(Q(workspace__isnull=True) | Q(workspace__in=ids) | Q(pk__in=shared))


def version_in_project(*, project, version_id) -> ModelVersion:
    """The version, if ``project``'s workspace may see it; Http404 otherwise (another
    workspace's version is never confirmed)."""
    return get_object_or_404(visible_to(project.workspace), pk=version_id)


def version_owned_from(*, project, version_id, user) -> ModelVersion:
    """A version whose shared settings (its serving endpoint, with whom it is shared) the
    caller may change from ``project``: one its workspace owns, or, for a superuser, one the
    operator installed. Http404 when the project cannot see it; PermissionDenied when it
    can but does not own it (a shared or operator version serves other workspaces too)."""
    version = version_in_project(project=project, version_id=version_id)
    owns = version.workspace_id == project.workspace_id or (
        version.workspace_id is None and user.is_superuser
    )
    if not owns:
        raise PermissionDenied(
            "This version belongs to another workspace or to the operator: only its owner "
            "changes its endpoint or sharing."
        )
    return version


def check_in_sight(project, *versions) -> None:
    """Refuse (NotFound) when ``project``'s workspace may not use one of ``versions`` (None
    entries are skipped): the services that start work on a version call it, whatever the
    view or form let through."""
    wanted = {version.pk for version in versions if version is not None}
    seen = set(visible_to(project.workspace).filter(pk__in=wanted).values_list("pk", flat=True))
    if wanted - seen:
        raise NotFound("No such model version in this project.")


def newest_policy(*, project) -> ModelVersion | None:
    """The newest policy ``project`` may use that is not an intermediate stage of a run:
    the default choice of the generation and training forms."""
    return (
        visible_to(project.workspace)
        .filter(kind=ModelVersion.Kind.POLICY, intermediate=False)
        .order_by("-created_at", "-id")
        .first()
    )


def usable_policies(*, project):
    """The policies ``project``'s workspace may use, each annotated with its state there
    (``project_state``), newest first; no intermediate stage of a run (it generates no
    replies until released). The choices of the forms that pick a policy by name."""
    rows = ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY, intermediate=False)
    return with_project_state(rows, project=project).order_by("-created_at", "-id")
