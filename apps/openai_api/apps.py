from django.apps import AppConfig


class OpenAIApiConfig(AppConfig):
    name = "apps.openai_api"
    label = "openai_api"
