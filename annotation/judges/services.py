"""Writes for constitutions and judges. Jobs are in annotation/judges/jobs.py.

Constitutions are versioned: an edit stores a new version under the same name and leaves
the old one (and every judgment that points at it) as it was. A judge points at one
version; ``judge_constitution_set`` moves it to another.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.db.models import Max, Q

from annotation.judges.principles import DEFAULT_CONSTITUTION, check_principles
from annotation.models import Constitution, Judge, Workspace
from config.errors import Conflict, ServiceError
from config.outbound import OutboundRefused, check_outbound_url
from models_registry import selectors as registry_selectors
from models_registry.models import ModelVersion

MAX_NOTE_CHARS = 2_000
MAX_KEY_CHARS = 500


def _user_or_none(user):
    return user if getattr(user, "is_authenticated", False) else None


def _clean_note(note) -> str:
    note = (note or "").strip() if isinstance(note, str | type(None)) else None
    if note is None:
        raise ServiceError("The note must be text.")
    if len(note) > MAX_NOTE_CHARS:
        raise ServiceError(f"Keep the note under {MAX_NOTE_CHARS} characters.")
    return note


def constitution_create(*, workspace, name, principles, user=None, note="") -> Constitution:
    """Version 1 of a new constitution of ``workspace``. ServiceError for bad principles;
    Conflict when the workspace already sees that name (edit that one instead)."""
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > 100:
        raise ServiceError("Give the constitution a name of at most 100 characters.")
    cleaned = check_principles(principles)
    note = _clean_note(note)
    if _constitution_line(workspace, name).exists():
        raise Conflict(f"A constitution named {name!r} exists; edit it to make a new version.")
    try:
        with transaction.atomic():
            return Constitution.objects.create(
                workspace=workspace,
                name=name,
                version=1,
                principles=cleaned,
                note=note,
                created_by=_user_or_none(user),
            )
    except IntegrityError:
        raise Conflict(f"A constitution named {name!r} exists.") from None


def constitution_edit(
    *, workspace, constitution: Constitution, principles, user=None, note=""
) -> Constitution:
    """A new version of ``constitution``'s name, owned by ``workspace``, holding
    ``principles``; the old version is kept unchanged. A built-in constitution stays as it
    is for every other workspace: the new version starts this workspace's own line of that
    name. Judges keep their version until moved (``judge_constitution_set``)."""
    if constitution.workspace_id not in (None, workspace.pk):
        raise ServiceError("That constitution belongs to another workspace.")
    cleaned = check_principles(principles)
    note = _clean_note(note)
    try:
        with transaction.atomic():
            latest = _constitution_line(workspace, constitution.name).aggregate(
                latest=Max("version")
            )["latest"]
            return Constitution.objects.create(
                workspace=workspace,
                name=constitution.name,
                version=(latest or 0) + 1,
                principles=cleaned,
                note=note,
                created_by=_user_or_none(user),
            )
    except IntegrityError:
        raise Conflict("Someone saved a new version at the same time; reload and retry.") from None


def _constitution_line(workspace, name: str):
    """Every version of ``name`` the workspace sees: its own and the built-in ones."""
    return Constitution.objects.filter(
        Q(workspace=workspace) | Q(workspace__isnull=True), name=name
    )


def ensure_default_constitution() -> Constitution:
    """The latest version of the built-in default constitution, created (version 1) if
    missing. Built-in: no workspace owns it, every workspace reads it."""
    existing = (
        Constitution.objects.filter(name=DEFAULT_CONSTITUTION["name"], workspace__isnull=True)
        .order_by("-version")
        .first()
    )
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            return Constitution.objects.create(
                name=DEFAULT_CONSTITUTION["name"],
                version=1,
                principles=check_principles(DEFAULT_CONSTITUTION["principles"]),
                note=DEFAULT_CONSTITUTION["note"],
            )
    except IntegrityError:  # created at the same moment elsewhere
        return Constitution.objects.get(
            name=DEFAULT_CONSTITUTION["name"], version=1, workspace__isnull=True
        )


def _constitution(value, workspace) -> Constitution:
    """A constitution version the workspace sees (its own or a built-in one)."""
    pk = value.pk if isinstance(value, Constitution) else value
    try:
        return Constitution.objects.filter(Q(workspace=workspace) | Q(workspace__isnull=True)).get(
            pk=int(pk)
        )
    except (TypeError, ValueError, Constitution.DoesNotExist):
        raise ServiceError("Choose a constitution version.") from None


def _policy_version(value, workspace) -> ModelVersion:
    """A policy version the workspace may use (registry visibility)."""
    pk = value.pk if isinstance(value, ModelVersion) else value
    try:
        version = registry_selectors.visible_to(workspace).get(pk=int(pk))
    except (TypeError, ValueError, ModelVersion.DoesNotExist):
        raise ServiceError("Choose a model version for a local judge.") from None
    if version.kind != ModelVersion.Kind.POLICY or version.state == ModelVersion.State.RETIRED:
        raise ServiceError("A local judge needs a policy model version that is not retired.")
    return version


def judge_create(
    *,
    workspace,
    name,
    backend,
    constitution,
    model_version=None,
    endpoint_url="",
    endpoint_model="",
    api_key="",
    chain_of_thought=False,
    user=None,
) -> Judge:
    """A judge: a local policy version (not retired) or an OpenAI-compatible endpoint (URL
    and model name; the key is optional and is never shown again), plus a constitution
    version. Bad input: ServiceError, nothing stored."""
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > 100:
        raise ServiceError("Give the judge a name of at most 100 characters.")
    if backend not in Judge.Backend.values:
        raise ServiceError("Choose where the judge runs: local or remote.")
    constitution = _constitution(constitution, workspace)
    fields: dict = {"model_version": None, "endpoint_url": "", "endpoint_model": "", "api_key": ""}
    if backend == Judge.Backend.LOCAL:
        fields["model_version"] = _policy_version(model_version, workspace)
    else:
        url = endpoint_url.strip() if isinstance(endpoint_url, str) else ""
        try:
            URLValidator(schemes=["http", "https"])(url)
        except ValidationError:
            raise ServiceError(
                "Give the endpoint URL, e.g. https://host/v1 (http or https)."
            ) from None
        if len(url) > 200:
            raise ServiceError("The endpoint URL is longer than 200 characters.")
        try:
            check_outbound_url(url, allow_private=settings.OUTBOUND_ALLOW_PRIVATE)
        except OutboundRefused as error:
            raise ServiceError(f"This endpoint URL is refused: {error}") from None
        model = endpoint_model.strip() if isinstance(endpoint_model, str) else ""
        if not model or len(model) > 200:
            raise ServiceError("Give the endpoint's model name (at most 200 characters).")
        key = api_key.strip() if isinstance(api_key, str) else ""
        if len(key) > MAX_KEY_CHARS:
            raise ServiceError(f"The API key is longer than {MAX_KEY_CHARS} characters.")
        fields.update(endpoint_url=url, endpoint_model=model, api_key=key)
    if Judge.objects.filter(workspace=workspace, name=name).exists():
        raise Conflict(f"A judge named {name!r} exists.")
    try:
        with transaction.atomic():
            return Judge.objects.create(
                workspace=workspace,
                name=name,
                backend=backend,
                constitution=constitution,
                chain_of_thought=bool(chain_of_thought),
                created_by=_user_or_none(user),
                **fields,
            )
    except IntegrityError:
        raise Conflict(f"A judge named {name!r} exists.") from None


def judge_constitution_set(*, judge: Judge, constitution) -> Judge:
    """Point the judge at another constitution version (its old judgments keep theirs)."""
    judge.constitution = _constitution(constitution, judge.workspace)
    judge.save(update_fields=["constitution"])
    return judge


def judge_share(*, judge: Judge, workspace_slug, share: bool = True) -> Judge:
    """Let another workspace's projects run jobs with ``judge`` (``share=False``: stop).
    They use the owner's endpoint and key without seeing either; the owner pays for it, so
    only the owner's admins may decide (the caller checks that)."""
    slug = workspace_slug.strip() if isinstance(workspace_slug, str) else ""
    other = Workspace.objects.filter(slug=slug).first()
    if other is None:
        raise ServiceError("No such workspace: give the slug of the workspace to share with.")
    if other.pk == judge.workspace_id:
        raise ServiceError("A judge is always usable in its own workspace.")
    if share:
        judge.shared_with.add(other)
    else:
        judge.shared_with.remove(other)
    return judge
