from django.urls import path

from apps.openai_api import apis

app_name = "openai_api"

urlpatterns = [
    path("chat/completions", apis.ChatCompletionsApi.as_view(), name="chat-completions"),
    path("models", apis.ModelsApi.as_view(), name="models"),
    # Model ids may hold slashes ("org/model"), as OpenAI-compatible servers name them.
    path("models/<path:model>", apis.ModelDetailApi.as_view(), name="model"),
]
