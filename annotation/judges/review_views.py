"""Humans and AI together: the judges' agreement report (page and JSON) and the API that
sends AI labels to the review queue. Thin callers of annotation/judges/agreement.py and
annotation/judges/review.py (the Review page's own form is annotation/review/views.py's
review_ai_fill)."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_GET
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.judges import agreement
from annotation.judges import review as ai_review
from annotation.projects.permissions import MANAGE, VIEW_DATA, can, project_for
from annotation.review.views import parse_ai_fill


@login_required
@require_GET
def judges_agreement_page(request, slug):
    """Researchers and admins: each judge and constitution version against the people."""
    project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
    context = {
        "project": project,
        "can_manage": can(user=request.user, project=project, capability=MANAGE),
        "can_view_data": True,
        "rows": agreement.judge_agreement(project=project),
    }
    return render(request, "annotation/judges/agreement.html", context)


class JudgesAgreementApi(APIView):
    """GET: one object per (judge, constitution version): judgments, compared, pairs,
    agreed, accuracy, kappa, position_bias_rate, mean_confidence, left_out."""

    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        return Response(
            {"project": project.slug, "judges": agreement.judge_agreement(project=project)}
        )


class ReviewAiFillApi(APIView):
    """POST {mode: all|sample|unsure|disagree, rate, threshold, judge}: flag AI judgments
    for human review; answers how many were newly sent and how many now wait."""

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        fields = parse_ai_fill(request.data)
        flagged = ai_review.ai_review_queue_fill(project=project, **fields)
        waiting = ai_review.ai_review_waiting(project=project)
        return Response({"flagged": flagged, "waiting": waiting, **fields})
