from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from apps.accounts.permissions import Perm, role_has
from apps.accounts.selectors import user_count_active
from apps.core.actors import request_actor
from apps.core.exceptions import InvalidInput, RateLimited, put_on_form
from apps.core.ratelimits import enforce_rate_limit
from apps.core.views import post_only
from apps.plans.selectors import plan_list_public
from apps.tenants.forms import SignupForm
from apps.tenants.services import tenant_provision
from apps.usage.limits import limits_for
from apps.usage.models import Quota
from apps.usage.selectors import quota_status


def _landing(request: HttpRequest, form: SignupForm, *, status: int = 200) -> HttpResponse:
    return render(request, "tenants/landing.html", {"plans": plan_list_public(), "form": form}, status=status)


@require_GET
def landing(request: HttpRequest) -> HttpResponse:
    initial = {"plan": request.GET.get("plan", "free")}
    return _landing(request, SignupForm(initial=initial))


@post_only(back="tenants:landing")
def signup(request: HttpRequest) -> HttpResponse:
    """The sign-up form: provision the workspace, then go to its login page."""
    form = SignupForm(request.POST)
    try:
        enforce_rate_limit(request, group="signup", key="ip", rate=settings.SIGNUP_RATE_LIMIT, fail_open=True)
    except RateLimited as exc:
        form.is_valid()
        form.add_error(None, exc.message)
        response = _landing(request, form, status=429)
        response["Retry-After"] = exc.headers["Retry-After"]
        return response
    if not form.is_valid():
        return _landing(request, form, status=400)
    try:
        result = tenant_provision(
            name=form.cleaned_data["name"],
            slug=form.cleaned_data["slug"],
            plan=form.cleaned_data["plan"],
            admin_email=form.cleaned_data["admin_email"],
            admin_password=form.cleaned_data["admin_password"],
            actor=request_actor(request, label="signup"),
            self_serve_only=True,
        )
    except InvalidInput as exc:
        put_on_form(form, exc)
        return _landing(request, form, status=400)
    query = urlencode({"email": result.admin.email, "welcome": "1"})
    return HttpResponseRedirect(f"{result.tenant.url}login/?{query}")


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """The workspace at a glance: plan, status, members, and its limits as they apply (staff overrides
    included); with ``view_stats``, what is used of each, as on the usage page."""
    tenant = request.tenant  # type: ignore[attr-defined]
    limits = limits_for(tenant)
    used = None
    if role_has(getattr(request.user, "role", ""), Perm.VIEW_STATS):
        used = {row["quota"]: row["used"] for row in quota_status(tenant)}
    rows = [
        {"quota": Quota.API_CALLS, "label": _("API calls a month"), "limit": limits.api_calls},
        {"quota": Quota.STORAGE, "label": _("Storage"), "limit": limits.storage_bytes, "is_bytes": True},
        {"quota": Quota.USERS, "label": _("Users"), "limit": limits.users},
        {"quota": Quota.MCP_SERVICES, "label": _("MCP services"), "limit": limits.mcp_services},
    ]
    for row in rows:
        row["used"] = used.get(row["quota"]) if used is not None else None
    context = {
        "tenant": tenant,
        "member_count": user_count_active(),
        "limits": rows,
        "rate_per_minute": limits.rate_per_minute,
        "member_daily_calls": limits.member_daily_calls,  # the admins' own limit, when they set one
        "shows_used": used is not None,
    }
    return render(request, "tenants/dashboard.html", context)
