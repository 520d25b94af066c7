from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _

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
            if not role_has(getattr(user, "role", ""), perm):
                message = _("This page needs the “%(permission)s” permission, which your role does not have.") % {
                    "permission": perm
                }
                return error_page(request, status=403, title=_("Forbidden"), message=message)
            return view(request, *args, **kwargs)

        wrapped.required_permission = perm  # type: ignore[attr-defined]
        return wrapped

    return decorator
