"""URLs of the OpenAI-compatible API and the API key page (included from config/urls.py)."""

from django.urls import path

from models_registry import openai_api, views

urlpatterns = [
    path("account/api-key/", views.api_key_page, name="api_key"),
    path("v1/models", openai_api.ModelListApi.as_view(), name="openai_models"),
    # <path:> so the readable names used as ids before model ids existed (with "/") resolve.
    path("v1/models/<path:model>", openai_api.ModelDetailApi.as_view(), name="openai_model"),
    path(
        "v1/chat/completions",
        openai_api.ChatCompletionsApi.as_view(),
        name="openai_chat_completions",
    ),
    path("v1/rewards", openai_api.RewardsApi.as_view(), name="openai_rewards"),
    path("v1/<path:rest>", openai_api.UnknownRouteApi.as_view(), name="openai_unknown"),
]
