from django.urls import path

from apps.usage import views

app_name = "usage"

urlpatterns = [
    path("usage/", views.usage_view, name="usage"),
    path("usage/export.csv", views.usage_export_view, name="export"),
    path("usage/spending-cap/", views.spending_cap_view, name="spending-cap"),
    path("usage/member-daily-calls/", views.member_daily_calls_view, name="member-daily-calls"),
]
