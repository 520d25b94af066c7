from django.urls import path

from apps.openai_api import apis

app_name = "openai_api"

urlpatterns = [
    path("models", apis.ModelsApi.as_view(), name="models"),
    path("chat/completions", apis.ChatCompletionsApi.as_view(), name="chat-completions"),
]
