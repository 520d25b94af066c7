from django.urls import path

from apps.llm import views

app_name = "llm"

urlpatterns = [path("settings/model/", views.provider_view, name="provider")]
