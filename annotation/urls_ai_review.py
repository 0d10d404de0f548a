"""URLs of humans-and-AI-together: AI labels to the review queue, the judges' agreement
report (included from config/urls.py)."""

from django.urls import path

from annotation import ai_review_views, quality_views

urlpatterns = [
    path("p/<slug:slug>/review/ai/", quality_views.review_ai_fill, name="review_ai_fill"),
    path(
        "p/<slug:slug>/judges/agreement/",
        ai_review_views.judges_agreement_page,
        name="judges_agreement",
    ),
    path(
        "api/projects/<slug:slug>/review/ai/",
        ai_review_views.ReviewAiFillApi.as_view(),
        name="api_review_ai_fill",
    ),
    path(
        "api/projects/<slug:slug>/judges/agreement/",
        ai_review_views.JudgesAgreementApi.as_view(),
        name="api_judges_agreement",
    ),
]
