"""System checks on settings that must fit together (run by ``manage.py check`` and at
every start of the web server). Settings only: config imports none of the apps; the
registry app registers these in its ``ready()``."""

from django.conf import settings
from django.core.checks import Error, Warning


def v1_limits(app_configs=None, **kwargs):
    """/v1's reply timeout must end before the web server kills the worker (a killed
    worker answers a bare HTML 500 and drops every request it held); the gate's places
    should leave web threads for the rest of the site."""
    problems = []
    reply, web = settings.V1_REPLY_TIMEOUT, settings.WEB_TIMEOUT
    if not reply > 0:
        problems.append(Error(f"V1_REPLY_TIMEOUT must be > 0, not {reply:g}.", id="loop.E001"))
    if reply >= web:
        problems.append(
            Error(
                f"V1_REPLY_TIMEOUT ({reply:g} s) must be below the web server's WEB_TIMEOUT "
                f"({web:g} s): a /v1 reply would outlive the worker, which is killed "
                "with a bare 500.",
                hint="Lower V1_REPLY_TIMEOUT or raise WEB_TIMEOUT (both from the environment).",
                id="loop.E002",
            )
        )
    if settings.V1_MAX_CONCURRENT < 1 or settings.V1_MAX_QUEUED < 0:
        problems.append(
            Error("V1_MAX_CONCURRENT must be >= 1 and V1_MAX_QUEUED >= 0.", id="loop.E003")
        )
    if settings.V1_MAX_PROMPT_TOKENS < 1:
        problems.append(Error("V1_MAX_PROMPT_TOKENS must be >= 1.", id="loop.E004"))
    held = settings.V1_MAX_CONCURRENT + settings.V1_MAX_QUEUED
    if held >= settings.WEB_THREADS:
        problems.append(
            Warning(
                f"V1_MAX_CONCURRENT + V1_MAX_QUEUED ({held}) is not below WEB_THREADS "
                f"({settings.WEB_THREADS}): /v1 can hold every thread of a web process, "
                "and pages wait behind generation.",
                id="loop.W001",
            )
        )
    return problems
