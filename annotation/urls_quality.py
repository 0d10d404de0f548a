"""URLs of the quality pages (included from config/urls.py)."""

from django.urls import path

from annotation import quality_views

urlpatterns = [
    path("p/<slug:slug>/quality/", quality_views.quality_page, name="quality"),
    path("p/<slug:slug>/quality/gold/", quality_views.quality_gold, name="quality_gold"),
    path(
        "p/<slug:slug>/quality/tasks/<int:task_id>/return/",
        quality_views.quality_task_return,
        name="quality_task_return",
    ),
    path("p/<slug:slug>/review/", quality_views.review_page, name="review"),
    path("p/<slug:slug>/me/", quality_views.my_work_page, name="my_work"),
]
