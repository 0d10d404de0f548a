"""Abuse limits (issue 14): request rates for /api and /v1, the password reset form's rate,
and the page a locked-out sign-in gets.

Rates and counting are DRF's (``SimpleRateThrottle``, counters in the default cache);
lockout after wrong passwords is django-axes' (settings ``AXES_*``). What is ours: the
rates are read from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` on each request (DRF
reads them once, when the class is defined, so a settings change would go unseen), /v1 is
counted per API key and per user, and the lockout page says when to try again.
"""

import hashlib
import math
from datetime import timedelta

from django.contrib.auth import views as auth_views
from django.shortcuts import render
from django.utils import timezone
from rest_framework import throttling
from rest_framework.settings import api_settings


class _RatesFromSettings:
    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class AnonThrottle(_RatesFromSettings, throttling.AnonRateThrottle):
    """/api without a sign-in: per client address."""


class UserThrottle(_RatesFromSettings, throttling.UserRateThrottle):
    """/api signed in: per user (per address when not signed in)."""


class V1KeyThrottle(_RatesFromSettings, throttling.SimpleRateThrottle):
    """/v1 per API key: ``request.auth`` is the key row when a bearer key signed the request
    in. Counted under a hash of the key's class and id (a token's id may be the secret
    itself), so a leaked key cannot use up its owner's other keys' allowance. Signed in by
    session (no key): per user."""

    scope = "v1_key"

    def get_cache_key(self, request, view):
        key_id = getattr(request.auth, "pk", None)
        if key_id is not None:
            raw = f"{type(request.auth).__name__}:{key_id}"
            ident = "key-" + hashlib.sha256(raw.encode()).hexdigest()[:32]
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            return None  # not signed in: /v1 answers 401 before any count
        return self.cache_format % {"scope": self.scope, "ident": ident}


class V1UserThrottle(_RatesFromSettings, throttling.SimpleRateThrottle):
    """/v1 per user, all their keys and their session together."""

    scope = "v1_user"

    def get_cache_key(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


class PasswordResetThrottle(_RatesFromSettings, throttling.SimpleRateThrottle):
    """Password reset mails asked for, per client address and per email address (each
    counted on its own), so the form cannot be used to flood someone's inbox."""

    scope = "password_reset"

    def __init__(self, ident: str):
        super().__init__()
        self.ident = ident

    def get_cache_key(self, request, view):
        digest = hashlib.sha256(self.ident.encode()).hexdigest()[:32]
        return self.cache_format % {"scope": self.scope, "ident": digest}


def client_ip(request) -> str | None:
    """The client's address as the throttles see it (REMOTE_ADDR, or X-Forwarded-For behind
    REST_FRAMEWORK["NUM_PROXIES"] proxies); django-axes uses it too."""
    return throttling.BaseThrottle().get_ident(request)


def _too_many(request, *, title: str, message: str, wait_seconds: float):
    wait_minutes = max(1, math.ceil(wait_seconds / 60))
    context = {
        "title": title,
        "message": message,
        "wait_minutes": wait_minutes,
        "retry_at": timezone.now() + timedelta(seconds=wait_seconds),
    }
    response = render(request, "registration/locked_out.html", context, status=429)
    response["Retry-After"] = str(math.ceil(wait_seconds))
    return response


def lockout_response(request, original_response=None, credentials=None):
    """django-axes' AXES_LOCKOUT_CALLABLE: 429 with a page saying when to try again.

    The cool-off counts from the last failed try (a failed try while locked out starts it
    again), so "in N minutes" is from now."""
    from axes.helpers import get_cool_off  # axes' app registry must be ready first

    cool_off = get_cool_off(request)
    return _too_many(
        request,
        title="Too many failed sign-ins",
        message="Signing in to this account from here is paused after too many wrong passwords.",
        wait_seconds=cool_off.total_seconds() if cool_off else 15 * 60,
    )


class ThrottledPasswordResetView(auth_views.PasswordResetView):
    """Django's password reset form, with a rate on the mails it may send."""

    def post(self, request, *args, **kwargs):
        email = request.POST.get("email", "").strip().lower()
        for ident in (f"ip:{client_ip(request)}", f"email:{email}"):
            throttle = PasswordResetThrottle(ident)
            if not throttle.allow_request(request, self):
                return _too_many(
                    request,
                    title="Too many password reset requests",
                    message="Password reset mails asked for from here or for this address "
                    "are paused for a while.",
                    wait_seconds=throttle.wait() or 60,
                )
        return super().post(request, *args, **kwargs)
