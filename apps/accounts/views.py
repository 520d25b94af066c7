"""The identity pages of a tenant: login, profile, team, invitations, API keys, password reset."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth import logout as auth_logout
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods
from django.views.i18n import set_language

from apps.accounts import services
from apps.accounts.decorators import permission_required
from apps.accounts.forms import (
    ApiKeyForm,
    AuditFilterForm,
    EmailLoginForm,
    InviteForm,
    PasswordChangeForm,
    PasswordResetRequestForm,
    ProfileForm,
    RoleForm,
    SetPasswordForm,
)
from apps.accounts.models import Role
from apps.accounts.permissions import Perm, role_has
from apps.accounts.selectors import access_api_key, access_invitation, access_user, api_key_list, invitation_list_open
from apps.accounts.selectors import user_list as member_list
from apps.audit.selectors import audit_event_list
from apps.core.actors import request_actor
from apps.core.exceptions import ApplicationError, InvalidInput, RateLimited, put_on_form
from apps.core.views import post_only
from apps.usage import limits
from apps.usage.selectors import api_key_totals

# --- Login and logout -------------------------------------------------------------


def _remember_language(user: Any, response: HttpResponse) -> HttpResponse:
    """After a web login: a member who chose a language (the language switch, ``PATCH /api/auth/me``) gets
    it in every browser they log in with."""
    if user.language:
        response.set_cookie(
            settings.LANGUAGE_COOKIE_NAME,
            user.language,
            max_age=settings.LANGUAGE_COOKIE_AGE,
            path=settings.LANGUAGE_COOKIE_PATH,
            domain=settings.LANGUAGE_COOKIE_DOMAIN,
            secure=settings.LANGUAGE_COOKIE_SECURE,
            httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
            samesite=settings.LANGUAGE_COOKIE_SAMESITE,  # type: ignore[arg-type]  # a setting: Django's values
        )
    return response


@require_http_methods(["POST"])
def language_view(request: HttpRequest) -> HttpResponse:
    """The pages' language switch: Django's ``set_language`` (a cookie, then back to the page), and a
    member's choice kept for the emails written to them and for their other browsers."""
    response = set_language(request)
    language = request.POST.get("language")
    if request.user.is_authenticated and language in dict(settings.LANGUAGES):
        services.user_update_profile(actor=request_actor(request), user=request.user, language=language)
    return response


@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    """Session login against this tenant's members, within the brute-force limits."""
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = ""
    if request.user.is_authenticated and request.method == "GET":
        return redirect(next_url or "tenants:dashboard")
    status = 200
    if request.method == "POST":
        form = EmailLoginForm(request.POST)
        if form.is_valid():
            try:
                user = services.login_authenticate(
                    request=request,
                    email=form.cleaned_data["username"],
                    password=form.cleaned_data["password"],
                    actor=request_actor(request),
                    channel="web",
                )
            except RateLimited as exc:
                form.add_error(None, exc.message)
                response = render(request, "accounts/login.html", {"form": form, "next": next_url}, status=429)
                response["Retry-After"] = exc.headers["Retry-After"]
                return response
            except ApplicationError as exc:
                form.add_error(None, exc.message)
                status = 400
            else:
                auth_login(request, user)
                return _remember_language(user, redirect(next_url or "tenants:dashboard"))
        else:
            status = 400
    else:
        form = EmailLoginForm(initial={"username": request.GET.get("email", "")})
    context = {"form": form, "next": next_url, "welcome": request.GET.get("welcome") == "1"}
    return render(request, "accounts/login.html", context, status=status)


@post_only(back="accounts:login")
def logout_view(request: HttpRequest) -> HttpResponse:
    services.web_logout_record(actor=request_actor(request))
    auth_logout(request)
    return redirect("accounts:login")


# --- Profile ----------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def profile_view(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    profile_form = ProfileForm(initial={"full_name": user.full_name})
    password_form = PasswordChangeForm()
    status = 200
    if request.method == "POST" and request.POST.get("form") == "profile":
        profile_form = ProfileForm(request.POST)
        if profile_form.is_valid():
            services.user_update_profile(
                actor=request_actor(request), user=user, full_name=profile_form.cleaned_data["full_name"]
            )
            messages.success(request, _("Your profile is saved."))
            return redirect("accounts:profile")
        status = 400
    elif request.method == "POST" and request.POST.get("form") == "password":
        password_form = PasswordChangeForm(request.POST)
        if password_form.is_valid():
            try:
                services.user_change_password(
                    actor=request_actor(request),
                    user=user,
                    old_password=password_form.cleaned_data["old_password"],
                    new_password=password_form.cleaned_data["new_password"],
                    keep_session_key=request.session.session_key,
                )
            except ApplicationError as exc:
                put_on_form(password_form, exc)
            else:
                update_session_auth_hash(request, user)
                messages.success(request, _("Your password is changed. Other sessions were logged out."))
                return redirect("accounts:profile")
        status = 400
    context = {"profile_form": profile_form, "password_form": password_form}
    return render(request, "accounts/profile.html", context, status=status)


# --- Team -------------------------------------------------------------------------

# The members page lists this many at a time, by email: 300 members were one page of 400 KB, 5,800 elements and a
# role menu each.
TEAM_PAGE_MEMBERS = 100


@permission_required(Perm.MANAGE_USERS)
@require_http_methods(["GET", "POST"])
def team_view(request: HttpRequest) -> HttpResponse:
    invite_form = InviteForm()
    status = 200
    if request.method == "POST":
        invite_form = InviteForm(request.POST)
        if invite_form.is_valid():
            try:
                invitation = services.invitation_create(actor=request_actor(request), **invite_form.cleaned_data)
            except ApplicationError as exc:
                put_on_form(invite_form, exc)
                status = 402 if exc.code == "quota_exceeded" else 400
            else:
                messages.success(request, _("Invitation sent to %(email)s.") % {"email": invitation.email})
                return redirect("accounts:team")
        else:
            status = 400
    context = {
        "members": Paginator(member_list(), TEAM_PAGE_MEMBERS).get_page(request.GET.get("page")),
        "invitations": invitation_list_open(),
        "invite_form": invite_form,
        "roles": Role.choices,
    }
    return render(request, "accounts/team.html", context, status=status)


@permission_required(Perm.MANAGE_USERS)
@post_only(back="accounts:team")
def member_action_view(request: HttpRequest, user_id: int, action: str) -> HttpResponse:
    """Role change, deactivation, reactivation or deletion of one member, from the team page."""
    actor = request_actor(request)
    member = access_user(actor, user_id)
    email = member.email
    try:
        if action == "role":
            form = RoleForm(request.POST)
            if not form.is_valid():
                raise InvalidInput(_("Choose admin, user or viewer."))
            member = services.user_change_role(actor=actor, user=member, role=form.cleaned_data["role"])
            done = _("%(email)s is now %(role)s.") % {"email": email, "role": member.get_role_display()}
        elif action == "deactivate":
            services.user_deactivate(actor=actor, user=member)
            done = _("%(email)s is deactivated and logged out everywhere.") % {"email": email}
        elif action == "reactivate":
            services.user_reactivate(actor=actor, user=member)
            done = _("%(email)s is active again.") % {"email": email}
        else:
            services.user_delete(actor=actor, user=member)
            done = _("%(email)s is deleted.") % {"email": email}
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, done)
    return redirect("accounts:team")


@permission_required(Perm.MANAGE_USERS)
@post_only(back="accounts:team")
def invitation_revoke_view(request: HttpRequest, invitation_id: int) -> HttpResponse:
    actor = request_actor(request)
    try:
        invitation = services.invitation_revoke(actor=actor, invitation=access_invitation(actor, invitation_id))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, _("The invitation to %(email)s is withdrawn.") % {"email": invitation.email})
    return redirect("accounts:team")


@require_http_methods(["GET", "POST"])
def invitation_accept_view(request: HttpRequest, token: str) -> HttpResponse:
    """The invitee chooses a password; a used, withdrawn or expired link is a clear 400 page."""
    try:
        invitation = services.invitation_from_token(token)
    except InvalidInput as exc:
        return render(request, "accounts/invitation_invalid.html", {"message": exc.message}, status=400)
    form = SetPasswordForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                user = services.invitation_accept(
                    token=token,
                    password=form.cleaned_data["new_password"],
                    full_name=form.cleaned_data.get("full_name", ""),
                    actor=request_actor(request),
                )
            except ApplicationError as exc:
                if exc.code == "invitation_invalid":
                    return render(request, "accounts/invitation_invalid.html", {"message": exc.message}, status=400)
                put_on_form(form, exc)
            else:
                auth_login(request, user, backend="django.contrib.auth.backends.ModelBackend")
                messages.success(request, _("Welcome to %(name)s.") % {"name": request.tenant.name})  # type: ignore[attr-defined]
                return _remember_language(user, redirect("tenants:dashboard"))
        status = 400
    return render(request, "accounts/invitation_accept.html", {"form": form, "invitation": invitation}, status=status)


# --- API keys -----------------------------------------------------------------------


@permission_required(Perm.MANAGE_API_KEYS)
@require_http_methods(["GET", "POST"])
def api_keys_view(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm()
    created = None
    status = 200
    if request.method == "POST":
        form = ApiKeyForm(request.POST)
        if form.is_valid():
            expires_at = form.cleaned_data.get("expires_at")
            try:
                api_key, secret = services.api_key_create(
                    actor=request_actor(request),
                    name=form.cleaned_data["name"],
                    role=form.cleaned_data["role"],
                    expires_at=expires_at,
                )
            except ApplicationError as exc:
                put_on_form(form, exc)
                status = 400
            else:
                # Shown in this response only: the secret is not stored and this page is not a redirect.
                created = {"api_key": api_key, "secret": secret}
                form = ApiKeyForm()
                status = 201
        else:
            status = 400
    keys = list(api_key_list())
    if role_has(getattr(request.user, "role", ""), Perm.VIEW_STATS):  # each key's calls this month
        today = limits.today()
        calls = {key_id: count for key_id, count, _tokens in api_key_totals(limits.period_start(today), today)}
        for key in keys:
            key.calls_this_month = calls.get(key.pk, 0)  # type: ignore[attr-defined]
    context = {"keys": keys, "form": form, "created": created}
    response = render(request, "accounts/api_keys.html", context, status=status)
    response["Cache-Control"] = "no-store"
    return response


@permission_required(Perm.MANAGE_API_KEYS)
@post_only(back="accounts:api-keys")
def api_key_revoke_view(request: HttpRequest, api_key_id: int) -> HttpResponse:
    actor = request_actor(request)
    api_key = services.api_key_revoke(actor=actor, api_key=access_api_key(actor, api_key_id))
    messages.success(request, _("The key “%(name)s” is revoked.") % {"name": api_key.name})
    return redirect("accounts:api-keys")


# --- Audit log -----------------------------------------------------------------------


def _day_start(day: date | None, tz: Any) -> datetime | None:
    """The moment ``day`` starts in ``tz``; None for no day, or for one so early that the moment has no UTC time
    (0001-01-01 east of Greenwich): nothing was recorded before it either."""
    if day is None or day == date.min:
        return None
    return datetime.combine(day, time.min, tz)


@permission_required(Perm.VIEW_AUDIT)
def audit_view(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    status = 200
    filters: dict[str, Any] = {}
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        tz = timezone.get_current_timezone()
        filters = {
            "actor": data.get("actor"),
            "action": data.get("action"),
            "since": _day_start(data.get("date_from"), tz),
            # The calendar's last day has no next one to stop before: no end.
            "until": _day_start(to + timedelta(days=1), tz) if (to := data.get("date_to")) and to != date.max else None,
        }
    elif form.is_bound:
        status = 400
    page = Paginator(audit_event_list(**filters), 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "page": page, "query": query.urlencode()}
    return render(request, "accounts/audit.html", context, status=status)


# --- Password reset --------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def password_reset_request_view(request: HttpRequest) -> HttpResponse:
    form = PasswordResetRequestForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.password_reset_request(email=form.cleaned_data["email"], actor=request_actor(request))
        except RateLimited as exc:
            form.add_error(None, exc.message)
            response = render(request, "accounts/password_reset.html", {"form": form}, status=429)
            response["Retry-After"] = exc.headers["Retry-After"]
            return response
        return render(request, "accounts/password_reset_sent.html", {"email": form.cleaned_data["email"]})
    return render(request, "accounts/password_reset.html", {"form": form}, status=400 if form.errors else 200)


@require_http_methods(["GET", "POST"])
def password_reset_confirm_view(request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
    try:
        services.password_reset_user(uidb64=uidb64, token=token)
    except InvalidInput as exc:
        return render(request, "accounts/invitation_invalid.html", {"message": exc.message}, status=400)
    form = SetPasswordForm(request.POST or None, ask_name=False)
    if request.method == "POST" and form.is_valid():
        try:
            services.password_reset_confirm(
                uidb64=uidb64, token=token, new_password=form.cleaned_data["new_password"], actor=request_actor(request)
            )
        except ApplicationError as exc:
            put_on_form(form, exc)
        else:
            messages.success(request, _("Your password is set. Log in with it."))
            return HttpResponseRedirect("/login/")
    return render(request, "accounts/password_reset_confirm.html", {"form": form}, status=400 if form.errors else 200)
