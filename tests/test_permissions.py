"""Every route Django serves has a permission row, in exactly one app's table.

The tables are tests/annotation/test_permissions.py (with the chat and arena routes their
feature files check for every caller), tests/training/test_permissions.py and
tests/models_registry/test_permissions.py (with the /v1 routes test_openai_api.py checks
by key); their machinery is tests/permissions.py. A new route without a row fails here.
"""

from collections import Counter

from django.http import HttpResponse
from django.urls import path

from config import urls as config_urls
from tests.annotation import test_permissions as annotation_table
from tests.models_registry import test_permissions as registry_table
from tests.permissions import every_named_route
from tests.training import test_permissions as training_table

# Open to everyone by design, so in no table: signing in and out and resetting a forgotten
# password (Django's own views; tests/config/test_abuse_limits.py), and the health check
# (tests/test_healthz.py).
OPEN_TO_EVERYONE = {
    "login",
    "logout",
    "password_reset",
    "password_reset_done",
    "password_reset_confirm",
    "password_reset_complete",
    "healthz",
}
# Any signed-in user, whatever their projects: the API's schema and its docs page
# (config/urls.py says why not everyone; tests/test_api_schema.py checks it).
SIGNED_IN = {"api_schema", "api_schema_json", "api_docs"}
TABLES = {
    "annotation": annotation_table.COVERED,
    "training": training_table.COVERED,
    "models_registry": registry_table.COVERED,
    "open to everyone": OPEN_TO_EVERYONE,
    "any signed-in user": SIGNED_IN,
}


def _routes_in_no_table() -> dict:
    listed = {name for names in TABLES.values() for name in names}
    return {name: pattern for name, pattern in every_named_route() if name not in listed}


def test_every_named_route_is_in_exactly_one_permission_table():
    served = Counter(name for name, _ in every_named_route())
    listed = Counter(name for names in TABLES.values() for name in names)

    assert {name for name, count in served.items() if count > 1} == set()  # names are unique
    assert _routes_in_no_table() == {}
    assert {name for name, count in listed.items() if count > 1} == set()
    assert set(listed) - set(served) == set()  # no row for a route that is gone


def test_the_walk_reaches_routes_of_every_include():
    served = dict(every_named_route())

    assert served["api_judge_job_cancel"] == (
        "api/projects/<slug:slug>/judge-jobs/<int:job_id>/cancel/"
    )
    assert served["openai_unknown"] == "v1/<path:rest>"
    assert not any(pattern.startswith("admin/") for pattern in served.values())


# The project's routes and one more, as a new feature would add it without a table row.
urlpatterns = [
    *config_urls.urlpatterns,
    path("p/<slug:slug>/brand-new/", lambda request, slug: HttpResponse(), name="brand_new"),
]


def test_a_new_route_without_a_row_is_caught(settings):
    settings.ROOT_URLCONF = __name__

    assert _routes_in_no_table() == {"brand_new": "p/<slug:slug>/brand-new/"}
