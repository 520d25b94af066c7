from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _

from apps.accounts.models import Role
from apps.accounts.permissions import Perm, role_has
from apps.core.views import error_page


def permission_required(perm: Perm) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """For web pages: log in first, then the role must grant ``perm`` (403 page naming it otherwise)."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            role = getattr(user, "role", "")
            if not role_has(role, perm):
                return error_page(request, status=403, title=_("Not for your role"), message=_refusal(role, perm),
                                  code=str(perm))  # fmt: skip
            return view(request, *args, **kwargs)

        wrapped.required_permission = perm  # type: ignore[attr-defined]
        return wrapped

    return decorator


def _refusal(role: str, perm: Perm) -> str:
    """Why a member may not open a page, in words (the permission's code is shown beside it, for support)."""
    if role_has(Role.USER, perm):  # users may: the member is a viewer
        return _("Viewers can read their own conversations only; this page is for the workspace's admins and "
                 "users. Ask an admin if you need it.")  # fmt: skip
    return _("Only the workspace's admins can open this page; your role is %(role)s. Ask an admin if you need "
             "it.") % {"role": dict(Role.choices).get(role, role)}  # fmt: skip
