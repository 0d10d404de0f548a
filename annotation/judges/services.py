"""Writes for constitutions and judges. Jobs are in annotation/judges/jobs.py.

Constitutions are versioned: an edit stores a new version under the same name and leaves
the old one (and every judgment that points at it) as it was. A judge points at one
version; ``judge_constitution_set`` moves it to another.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.db.models import Max

from annotation.judges.principles import DEFAULT_CONSTITUTION, check_principles
from annotation.models import Constitution, Judge
from config.errors import Conflict, ServiceError
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


def constitution_create(*, name, principles, user=None, note="") -> Constitution:
    """Version 1 of a new constitution. ServiceError for bad principles; Conflict when the
    name is taken (edit that one instead)."""
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > 100:
        raise ServiceError("Give the constitution a name of at most 100 characters.")
    cleaned = check_principles(principles)
    note = _clean_note(note)
    if Constitution.objects.filter(name=name).exists():
        raise Conflict(f"A constitution named {name!r} exists; edit it to make a new version.")
    try:
        with transaction.atomic():
            return Constitution.objects.create(
                name=name,
                version=1,
                principles=cleaned,
                note=note,
                created_by=_user_or_none(user),
            )
    except IntegrityError:
        raise Conflict(f"A constitution named {name!r} exists.") from None


def constitution_edit(
    *, constitution: Constitution, principles, user=None, note=""
) -> Constitution:
    """A new version of ``constitution``'s name holding ``principles``; the old version is
    kept unchanged. Judges keep their version until moved (``judge_constitution_set``)."""
    cleaned = check_principles(principles)
    note = _clean_note(note)
    try:
        with transaction.atomic():
            latest = Constitution.objects.filter(name=constitution.name).aggregate(
                latest=Max("version")
            )["latest"]
            return Constitution.objects.create(
                name=constitution.name,
                version=(latest or 0) + 1,
                principles=cleaned,
                note=note,
                created_by=_user_or_none(user),
            )
    except IntegrityError:
        raise Conflict("Someone saved a new version at the same time; reload and retry.") from None


def ensure_default_constitution() -> Constitution:
    """The latest version of the default constitution, created (version 1) if missing."""
    existing = (
        Constitution.objects.filter(name=DEFAULT_CONSTITUTION["name"]).order_by("-version").first()
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
        return Constitution.objects.get(name=DEFAULT_CONSTITUTION["name"], version=1)


def _constitution(value) -> Constitution:
    if isinstance(value, Constitution):
        return value
    try:
        return Constitution.objects.get(pk=int(value))
    except (TypeError, ValueError, Constitution.DoesNotExist):
        raise ServiceError("Choose a constitution version.") from None


def _policy_version(value) -> ModelVersion:
    if isinstance(value, ModelVersion):
        version = value
    else:
        try:
            version = ModelVersion.objects.get(pk=int(value))
        except (TypeError, ValueError, ModelVersion.DoesNotExist):
            raise ServiceError("Choose a model version for a local judge.") from None
    if version.kind != ModelVersion.Kind.POLICY or version.state == ModelVersion.State.RETIRED:
        raise ServiceError("A local judge needs a policy model version that is not retired.")
    return version


def judge_create(
    *,
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
    constitution = _constitution(constitution)
    fields: dict = {"model_version": None, "endpoint_url": "", "endpoint_model": "", "api_key": ""}
    if backend == Judge.Backend.LOCAL:
        fields["model_version"] = _policy_version(model_version)
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
        model = endpoint_model.strip() if isinstance(endpoint_model, str) else ""
        if not model or len(model) > 200:
            raise ServiceError("Give the endpoint's model name (at most 200 characters).")
        key = api_key.strip() if isinstance(api_key, str) else ""
        if len(key) > MAX_KEY_CHARS:
            raise ServiceError(f"The API key is longer than {MAX_KEY_CHARS} characters.")
        fields.update(endpoint_url=url, endpoint_model=model, api_key=key)
    if Judge.objects.filter(name=name).exists():
        raise Conflict(f"A judge named {name!r} exists.")
    try:
        with transaction.atomic():
            return Judge.objects.create(
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
    judge.constitution = _constitution(constitution)
    judge.save(update_fields=["constitution"])
    return judge
