"""URLs of the tenants app: the public site's pages and the tenant's home."""

from django.urls import path

from apps.tenants import apis, views

app_name = "tenants"

public_urlpatterns = [
    path("", views.landing, name="landing"),
    path("signup/", views.signup, name="signup"),
]

public_api_urlpatterns = [
    path("signup", apis.SignupApi.as_view(), name="api-signup"),
    path("plans", apis.PlanListApi.as_view(), name="api-plans"),
]

tenant_urlpatterns = [
    path("dashboard/", views.dashboard, name="dashboard"),
]
