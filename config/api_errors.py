from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from config.celery import QueueUnavailable
from config.errors import ServiceError


def exception_handler(exc, context):
    """Service refusals become 4xx answers with the service's own message."""
    if isinstance(exc, ServiceError):
        return Response({"detail": exc.message}, status=exc.status_code)
    if isinstance(exc, QueueUnavailable):
        return Response({"detail": str(exc)}, status=503)
    # Django's refusals of a body it cannot read (config/middleware.py answers most before
    # the view): JSON here, not Django's HTML 400 page.
    if isinstance(exc, RequestDataTooBig):
        return Response({"detail": f"The request body is too large: {exc}"}, status=413)
    if isinstance(exc, SuspiciousOperation):
        return Response({"detail": f"The request could not be read: {exc}"}, status=400)
    return drf_exception_handler(exc, context)
