"""How tenant API requests prove who they are: API keys, JWTs and web sessions.

Every credential is checked against ``request.tenant``: a JWT must carry the
schema of the host's tenant (401 ``token_tenant_mismatch`` otherwise), an API
key is looked up only in the host's schema, and sessions are stored per schema.
"""

from __future__ import annotations

import copy
import time
from functools import lru_cache
from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import Token
from rest_framework_simplejwt.utils import aware_utcnow, get_md5_hash_password

from apps.accounts.models import User
from apps.accounts.selectors import user_by_id
from apps.accounts.services import API_KEY_PREFIX, TENANT_CLAIM, InvalidCredentials, api_key_authenticate
from apps.api.principals import ApiKeyPrincipal
from apps.core.actors import client_ip


class TokenTenantMismatch(exceptions.AuthenticationFailed):
    default_detail = _("This token belongs to another workspace.")
    default_code = "token_tenant_mismatch"


class ApiKeyFailed(exceptions.AuthenticationFailed):
    default_code = "not_authenticated"


def _api_key_from(request: Request) -> str | None:
    header = request.META.get("HTTP_X_API_KEY")
    if header:
        return str(header).strip()
    authorization = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _sep, credential = authorization.partition(" ")
    if scheme.lower() == "bearer" and credential.strip().startswith(API_KEY_PREFIX):
        return credential.strip()
    return None


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Bearer hn_...`` or ``X-API-Key: hn_...``."""

    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, Any] | None:
        secret = _api_key_from(request)
        if secret is None:
            return None
        try:
            api_key = api_key_authenticate(secret=secret, ip=client_ip(request))
        except InvalidCredentials as exc:
            raise ApiKeyFailed(exc.message) from exc
        return ApiKeyPrincipal(api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


# Access tokens this process has verified, by their encoded bytes. Verifying one (PyJWT's
# signature and claim checks, then simplejwt's) is most of the CPU of authenticating a
# request by JWT (docs/benchmarks.md, chat), and a client sends the same token for its whole
# lifetime. What a token says cannot change once it is signed, so only what depends on the
# time is checked again on every request: the expiry. What can change (the user's row:
# active, password) is read on every request in ``get_user``, as before. A token that
# fails verification is never kept. The signing key cannot change under a kept token:
# simplejwt reads it once per process (``rest_framework_simplejwt.state``).
VERIFIED_TOKENS_KEPT = 4096


@lru_cache(maxsize=VERIFIED_TOKENS_KEPT)
def _verified(raw_token: bytes) -> tuple[Token, float]:
    """The token, verified as simplejwt verifies it (raises if it is not valid), and the time it expires."""
    token = JWTAuthentication().get_validated_token(raw_token)
    leeway = token.get_token_backend().get_leeway().total_seconds()
    return token, float(token["exp"]) + leeway


class TenantJWTAuthentication(JWTAuthentication):
    """simplejwt's access tokens, accepted only on the host of the tenant that issued them."""

    def get_validated_token(self, raw_token: bytes) -> Token:
        """simplejwt's verification, done once per token in this process (see ``_verified``)."""
        token, expires = _verified(raw_token)
        if time.time() >= expires:  # simplejwt's check_exp: expired once exp <= now - leeway
            return super().get_validated_token(raw_token)  # raises simplejwt's own "expired" error
        mine = copy.copy(token)  # this request's copy: nothing shared can be changed through it
        mine.payload = dict(token.payload)
        mine.current_time = aware_utcnow()
        return mine

    def authenticate(self, request: Request) -> tuple[Any, Token] | None:
        header = self.get_header(request)
        raw = self.get_raw_token(header) if header is not None else None
        if raw is None:
            return None
        token = self.get_validated_token(raw)
        # Before the user is looked up: user ids repeat across schemas.
        if token.get(TENANT_CLAIM) != request.tenant.schema_name:  # type: ignore[attr-defined]
            raise TokenTenantMismatch()
        return self.get_user(token), token

    def get_user(self, validated_token: Token) -> User:  # type: ignore[override]  # simplejwt's AuthUser TypeVar
        """simplejwt's checks (the user exists, is active, and has not changed password since the
        token was issued), with the user read by one hand-written statement (``user_by_id``)."""
        try:
            user_id = int(validated_token[jwt_settings.USER_ID_CLAIM])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidToken(str(_("Token contained no recognizable user identification"))) from exc
        user = user_by_id(user_id)
        if user is None:
            raise exceptions.AuthenticationFailed(_("User not found"), code="user_not_found")
        if jwt_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
            raise exceptions.AuthenticationFailed(_("User is inactive"), code="user_inactive")
        # A deactivation ended the tokens issued before it, reactivated or not. "iat" is in whole seconds: a
        # token of the deactivation's own second is let be, as is one issued after a reactivation in it.
        ended = user.tokens_valid_after
        if ended is not None and validated_token.get("iat", 0) < int(ended.timestamp()):
            raise exceptions.AuthenticationFailed(
                _("This token was issued before the member was deactivated. Log in again."), code="token_ended"
            )
        if jwt_settings.CHECK_REVOKE_TOKEN and validated_token.get(
            jwt_settings.REVOKE_TOKEN_CLAIM
        ) != get_md5_hash_password(user.password):
            raise exceptions.AuthenticationFailed(_("The user's password has been changed."), code="password_changed")
        return user


class TenantSessionAuthentication(SessionAuthentication):
    """The web UI's session (stored in this tenant's schema), with DRF's CSRF check."""
