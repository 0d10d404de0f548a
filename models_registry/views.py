"""The API key page (the key for the OpenAI-compatible API). The project's Models page and
its generation jobs are annotation/candidates/views.py; the version pages are
registry_views.py."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from models_registry import selectors, services


@login_required
@require_http_methods(["GET", "POST"])
def api_key_page(request):
    """Shows whether the user has an API key; a POST makes a new one and shows it once."""
    key = None
    if request.method == "POST":
        key = services.api_key_rotate(user=request.user).key
    context = {
        "key": key,
        "existing": selectors.api_key_of(user=request.user),
        "base_url": request.build_absolute_uri("/v1"),
        "models": selectors.servable_versions(),
    }
    return render(request, "models_registry/api_key.html", context)
