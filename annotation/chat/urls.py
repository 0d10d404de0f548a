"""URLs of the chat pages and API (included from config/urls.py)."""

from django.urls import path

from annotation.chat import views as chat_views

session = "p/<slug:slug>/chat/<int:session_id>/"
api_session = "api/projects/<slug:slug>/chats/<int:session_id>/"

urlpatterns = [
    path("p/<slug:slug>/chat/", chat_views.chat_start_page, name="chat"),
    path(session, chat_views.chat_session_page, name="chat_session"),
    path(f"{session}message/", chat_views.chat_message, name="chat_message"),
    path(f"{session}pick/", chat_views.chat_pick, name="chat_pick"),
    path(f"{session}retry/", chat_views.chat_retry, name="chat_retry"),
    path(f"{session}finish/", chat_views.chat_finish, name="chat_finish"),
    path("api/projects/<slug:slug>/chats/", chat_views.ChatListApi.as_view(), name="api_chats"),
    path(api_session, chat_views.ChatDetailApi.as_view(), name="api_chat"),
    path(f"{api_session}messages/", chat_views.ChatMessageApi.as_view(), name="api_chat_message"),
    path(f"{api_session}picks/", chat_views.ChatPickApi.as_view(), name="api_chat_pick"),
    path(f"{api_session}retry/", chat_views.ChatRetryApi.as_view(), name="api_chat_retry"),
    path(f"{api_session}finish/", chat_views.ChatFinishApi.as_view(), name="api_chat_finish"),
]
