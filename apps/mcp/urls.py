from django.urls import path, re_path

from apps.mcp import views

app_name = "mcp"

urlpatterns = [
    path("services/", views.services_view, name="services"),
    path("services/<int:service_id>/edit/", views.service_edit_view, name="service-edit"),
    re_path(
        r"^services/(?P<service_id>\d+)/(?P<action>test|enable|disable|delete)/$",
        views.service_action_view,
        name="service-action",
    ),
]
