"""URLs of the AI judges pages and API, and of humans-and-AI-together: AI labels to the
review queue, the judges' agreement report (included from config/urls.py)."""

from django.urls import path

from annotation.judges import views
from annotation.review.views import review_ai_fill

page = "p/<slug:slug>/judges/"
api = "api/projects/<slug:slug>/"

urlpatterns = [
    path(page, views.judges_page, name="ai_judges"),
    path(f"{page}new/", views.judge_create, name="ai_judge_create"),
    path(f"{page}<int:judge_id>/share/", views.judge_share, name="ai_judge_share"),
    path(f"{page}constitutions/", views.constitution_create, name="ai_constitution_create"),
    path(
        f"{page}constitutions/default/",
        views.constitution_default,
        name="ai_constitution_default",
    ),
    path(
        f"{page}constitutions/<int:constitution_id>/",
        views.constitution_page,
        name="ai_constitution",
    ),
    path(f"{page}jobs/", views.judge_job_start, name="ai_judge_job_start"),
    path(f"{page}jobs/<int:job_id>/", views.judge_job_page, name="ai_judge_job"),
    path(f"{page}jobs/<int:job_id>/cancel/", views.judge_job_cancel, name="ai_judge_job_cancel"),
    path(f"{api}judges/", views.JudgeListApi.as_view(), name="api_judges"),
    path(
        f"{api}judges/<int:judge_id>/share/",
        views.JudgeShareApi.as_view(),
        name="api_judge_share",
    ),
    path(f"{api}constitutions/", views.ConstitutionListApi.as_view(), name="api_constitutions"),
    path(
        f"{api}constitutions/<int:constitution_id>/",
        views.ConstitutionDetailApi.as_view(),
        name="api_constitution",
    ),
    path(f"{api}judge-jobs/", views.JudgeJobListApi.as_view(), name="api_judge_jobs"),
    path(f"{api}judge-jobs/<int:job_id>/", views.JudgeJobDetailApi.as_view(), name="api_judge_job"),
    path(
        f"{api}judge-jobs/<int:job_id>/cancel/",
        views.JudgeJobCancelApi.as_view(),
        name="api_judge_job_cancel",
    ),
    path("p/<slug:slug>/review/ai/", review_ai_fill, name="review_ai_fill"),
    path(
        "p/<slug:slug>/judges/agreement/",
        views.judges_agreement_page,
        name="judges_agreement",
    ),
    path(
        "api/projects/<slug:slug>/review/ai/",
        views.ReviewAiFillApi.as_view(),
        name="api_review_ai_fill",
    ),
    path(
        "api/projects/<slug:slug>/judges/agreement/",
        views.JudgesAgreementApi.as_view(),
        name="api_judges_agreement",
    ),
]
