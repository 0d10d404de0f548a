"""URLs of the arena pages and API (included from config/urls.py)."""

from django.urls import path

from annotation.arena import api, views

battle = "p/<slug:slug>/arena/<int:battle_id>/"
api_battle = "api/projects/<slug:slug>/battles/<int:battle_id>/"

urlpatterns = [
    path("p/<slug:slug>/arena/", views.arena_page, name="arena"),
    path(battle, views.arena_battle_page, name="arena_battle"),
    path(f"{battle}vote/", views.arena_vote, name="arena_vote"),
    path(f"{battle}retry/", views.arena_retry, name="arena_retry"),
    path("api/projects/<slug:slug>/battles/", api.BattleListApi.as_view(), name="api_battles"),
    path(api_battle, api.BattleDetailApi.as_view(), name="api_battle"),
    path(f"{api_battle}vote/", api.BattleVoteApi.as_view(), name="api_battle_vote"),
    path(f"{api_battle}retry/", api.BattleRetryApi.as_view(), name="api_battle_retry"),
]
