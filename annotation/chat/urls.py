"""URLs of the chat pages and API (included from config/urls.py)."""

from django.urls import path

from annotation.chat import api, views

session = "p/<slug:slug>/chat/<int:session_id>/"
api_session = "api/projects/<slug:slug>/chats/<int:session_id>/"

urlpatterns = [
    path("p/<slug:slug>/chat/", views.chat_start_page, name="chat"),
    path(session, views.chat_session_page, name="chat_session"),
    path(f"{session}message/", views.chat_message, name="chat_message"),
    path(f"{session}pick/", views.chat_pick, name="chat_pick"),
    path(f"{session}retry/", views.chat_retry, name="chat_retry"),
    path(f"{session}finish/", views.chat_finish, name="chat_finish"),
    path("api/projects/<slug:slug>/chats/", api.ChatListApi.as_view(), name="api_chats"),
    path(api_session, api.ChatDetailApi.as_view(), name="api_chat"),
    path(f"{api_session}messages/", api.ChatMessageApi.as_view(), name="api_chat_message"),
    path(f"{api_session}picks/", api.ChatPickApi.as_view(), name="api_chat_pick"),
    path(f"{api_session}retry/", api.ChatRetryApi.as_view(), name="api_chat_retry"),
    path(f"{api_session}finish/", api.ChatFinishApi.as_view(), name="api_chat_finish"),
]
