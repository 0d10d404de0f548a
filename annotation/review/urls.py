"""URLs of the review and quality pages and of the review API (included from config/urls.py)."""

from django.urls import path

from annotation.review import api, views

urlpatterns = [
    path("p/<slug:slug>/quality/", views.quality_page, name="quality"),
    path("p/<slug:slug>/quality/gold/", views.quality_gold, name="quality_gold"),
    path(
        "p/<slug:slug>/quality/gold/<int:task_id>/",
        views.quality_gold_task,
        name="quality_gold_task",
    ),
    path(
        "p/<slug:slug>/quality/tasks/<int:task_id>/return/",
        views.quality_task_return,
        name="quality_task_return",
    ),
    path("p/<slug:slug>/review/", views.review_page, name="review"),
    path("p/<slug:slug>/review/import/", views.review_import_fill, name="review_import_fill"),
    path(
        "api/projects/<slug:slug>/review/import/",
        api.ReviewImportFillApi.as_view(),
        name="api_review_import_fill",
    ),
    path("p/<slug:slug>/me/", views.my_work_page, name="my_work"),
]
