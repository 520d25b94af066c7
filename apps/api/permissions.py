from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from apps.accounts.permissions import Perm, role_has
from apps.accounts.services import API_KEY_PREFIX


class PermissionMissing(exceptions.PermissionDenied):
    """403 ``permission_denied`` that names the permission in ``details.permission``."""

    def __init__(self, perm: Perm | str) -> None:
        super().__init__(_("This needs the “%(permission)s” permission.") % {"permission": perm})
        self.permission = str(perm)


class HasRequiredPermission(BasePermission):
    """Reads ``view.required_permission`` against the permission map for the principal's role."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if getattr(view, "dangerously_allow_anonymous", False):
            return True
        if not (request.user and request.user.is_authenticated):
            raise exceptions.NotAuthenticated(_refusal(request, view))
        perm = view.required_permission
        if perm is None:
            return True
        if not role_has(getattr(request.user, "role", ""), perm):
            raise PermissionMissing(perm)
        return True


def _refusal(request: Request, view: Any) -> str | None:
    """Why a request without credentials the endpoint takes is refused, when it sent another kind (None: DRF's
    "not provided"): a client that sends its login's access token to /v1 should learn that it needs a key."""
    scheme, _sep, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    credentials = getattr(view, "credentials", ())
    if scheme.lower() == "bearer" and token and not token.startswith(API_KEY_PREFIX) and "jwt" not in credentials:
        return _("This endpoint takes an API key (Authorization: Bearer hn_…), not the access token of a login.")
    return None
