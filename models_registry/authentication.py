"""API key authentication for ``/api`` and ``/v1``: ``Authorization: Bearer <key>`` or
``Authorization: Token <key>`` (both work everywhere). The key is looked up by its SHA-256
(``models_registry.models.ApiKey``); a revoked key gets 401 "This API key was revoked.".
``request.user`` is the key's user and ``request.auth`` the ``ApiKey`` row, whose
workspace scopes what ``/v1`` serves (``selectors.servable_versions_for_request``)."""

from datetime import timedelta

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from models_registry import selectors
from models_registry.models import ApiKey

SCHEMES = (b"bearer", b"token")
# last_used_at is written at most this often per key: one write a minute, not one a request.
LAST_USED_EVERY = timedelta(minutes=1)


class ApiKeyAuthentication(BaseAuthentication):
    """A hashed, revocable API key. ``keyword`` is the scheme a 401 names in its
    ``WWW-Authenticate`` challenge (``/api`` says ``Token``; ``/v1`` says ``Bearer``)."""

    keyword = "Token"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() not in SCHEMES:
            return None  # not ours: the session (or nothing) decides
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Send the key as 'Authorization: Bearer <key>', one word without spaces."
            )
        try:
            secret = parts[1].decode("ascii")
        except UnicodeError:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        key = selectors.api_key_by_secret(secret)
        if key is None or not key.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API key was revoked.")
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at >= LAST_USED_EVERY:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
            key.last_used_at = now
        return key.user, key

    def authenticate_header(self, request):
        return self.keyword


class BearerApiKeyAuthentication(ApiKeyAuthentication):
    """The same keys, with OpenAI's ``Bearer`` challenge (``/v1``)."""

    keyword = "Bearer"
