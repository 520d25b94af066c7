from __future__ import annotations

from typing import Any

from django.contrib.auth import views as auth_views

from apps.accounts.forms import EmailLoginForm


class LoginView(auth_views.LoginView):
    """Session login on a tenant host, against that tenant's own members."""

    form_class = EmailLoginForm
    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def get_initial(self) -> dict[str, Any]:
        return {**super().get_initial(), "username": self.request.GET.get("email", "")}

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "welcome": self.request.GET.get("welcome") == "1"}


class LogoutView(auth_views.LogoutView):
    """Logout by POST only, with CSRF, as Django requires."""
