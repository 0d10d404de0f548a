"""Refuse hostile input before any view sees it, whatever the view reads.

Views read ``request.POST``, ``request.GET`` and the path directly in many places; a NUL
character there reached PostgreSQL (which refuses it: a 500 half-way through a request),
and an oversized body got Django's HTML 400 page on JSON routes. One guard here covers the
whole class: a NUL or a lone surrogate in the path, a query parameter, a form field or an
uploaded file's name is a 400, and a body over DATA_UPLOAD_MAX_MEMORY_SIZE is a 413. JSON
bodies are checked by config.parsers.SafeJSONParser, the API's parser.

Answers are JSON ``{"detail": ...}`` on /api/, OpenAI's error object on /v1/, and a short
HTML page elsewhere.
"""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.utils.html import escape

from config.parsers import unstorable_character

BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _too_large_message() -> str:
    limit_mb = settings.DATA_UPLOAD_MAX_MEMORY_SIZE // (1024 * 1024)
    return f"The request body is larger than {limit_mb} MB."


def refusal(request, message: str, status: int) -> HttpResponse:
    """The answer to refused input, in the shape the route's clients read."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=status)
    if request.path.startswith("/v1/"):
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
        return JsonResponse({"error": error}, status=status)
    title = "Request too large" if status == 413 else "Bad request"
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><h1>{title}</h1><p>{escape(message)}</p></body></html>"
    )
    return HttpResponse(page, status=status, content_type="text/html; charset=utf-8")


def _problem_in(where: str, pairs) -> str | None:
    for key, values in pairs:
        for text in (key, *values):
            problem = unstorable_character(text)
            if problem:
                return f"{where} {key!r} holds {problem}."
    return None


def _content_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def hostile_input_problem(request) -> tuple[str, int] | None:
    """(message, status) for input no view should see, else None."""
    problem = unstorable_character(request.path)
    if problem:
        return f"The address holds {problem}.", 400
    try:
        problem = _problem_in("The query parameter", request.GET.lists())
    except SuspiciousOperation as error:  # too many parameters
        return f"The address could not be read: {error}", 400
    if problem:
        return problem, 400
    if request.method not in BODY_METHODS:
        return None
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    # A multipart POST carries files, which Django limits per field (and upload views by
    # size); every other body is read into memory whole, so its length is the limit.
    carries_files = request.method == "POST" and request.content_type == "multipart/form-data"
    if limit is not None and not carries_files and _content_length(request) > limit:
        return _too_large_message(), 413
    if request.method != "POST":
        return None  # Django parses form fields of POST only; the API parses the rest
    try:
        fields = request.POST
        files = request.FILES
    except RequestDataTooBig:
        return _too_large_message(), 413
    except (MultiPartParserError, SuspiciousOperation) as error:
        return f"The form could not be read: {error}", 400
    problem = _problem_in("The form field", fields.lists())
    if problem:
        return problem, 400
    for name, upload in files.lists():
        problem = _problem_in("The name of the file in", [(name, [f.name or "" for f in upload])])
        if problem:
            return problem, 400
    return None


class HostileInputMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        found = hostile_input_problem(request)
        if found is not None:
            message, status = found
            return refusal(request, message, status)
        return self.get_response(request)
