import hashlib
from pathlib import Path

from django.db.models import F, Prefetch
from django.shortcuts import get_object_or_404

from models_registry.models import ApiKey, ModelVersion, StateChange


def policy_versions():
    return ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY).select_related("parent")


def versions(*, kind: str | None = None):
    """Every registered version (policies and reward models), or those of one kind."""
    rows = ModelVersion.objects.select_related("parent").prefetch_related("children")
    return rows.filter(kind=kind) if kind else rows


def latest_reward_model() -> ModelVersion | None:
    """The reward model that judges new work (active pairing, a training run's win rate):
    the newest reward model that is neither retired nor an intermediate stage of a run, or
    None. A retired version was taken out of use on purpose, so it judges nothing new."""
    return (
        ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD, intermediate=False)
        .exclude(state=ModelVersion.State.RETIRED)
        .order_by("-created_at", "-id")
        .first()
    )


def servable_versions(*, kind: str | None = None):
    """Versions the API, chat and the arena may use: every one not retired (of ``kind``,
    if given), newest first. An intermediate stage of a run (the SFT before DPO) is left
    out until an admin releases it."""
    rows = ModelVersion.objects.exclude(state=ModelVersion.State.RETIRED).exclude(intermediate=True)
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


def incumbent() -> ModelVersion | None:
    """The serving policy promoted last: the one a candidate has to beat (never an
    intermediate stage of a run, which cannot be promoted)."""
    return (
        ModelVersion.objects.filter(
            kind=ModelVersion.Kind.POLICY, state=ModelVersion.State.SERVING, intermediate=False
        )
        .order_by(F("promoted_at").desc(nulls_last=True), "-id")
        .first()
    )


def version_detail(*, version_id: int) -> ModelVersion:
    """A version with what its page shows: parent, training run and its snapshot, children
    and state history. Http404 when there is none."""
    return get_object_or_404(
        ModelVersion.objects.select_related(
            "parent", "training_run__project", "training_run__snapshot"
        ).prefetch_related(
            Prefetch("children", queryset=ModelVersion.objects.order_by("created_at", "id")),
            Prefetch("changes", queryset=StateChange.objects.select_related("user", "incumbent")),
        ),
        pk=version_id,
    )


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


def lineage_graph() -> dict:
    """Every version as a node of a forest (roots: versions without a parent), laid out
    for an SVG: generations from left to right, each leaf on its own row, a parent
    centred on its children. Returns ``{"nodes", "edges", "width", "height"}``; a node
    carries the version and its box (x, y of the top-left corner; cx, cy of the
    centre), an edge the coordinates from the parent's right side to the child's left."""
    rows = list(ModelVersion.objects.order_by("created_at", "id"))
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
