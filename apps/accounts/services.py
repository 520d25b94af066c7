"""Writes to identity: members, invitations, sessions and tokens, passwords, API keys.

Views, APIs, tasks and commands all come through here. Every change to a
tenant's identity takes an ``actor`` and records its audit event in the same
transaction. These functions run in the current tenant's schema, except
``staff_user_create``, which runs in the public schema.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.password_validation import validate_password
from django.contrib.auth.tokens import default_token_generator
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone, translation
from django.utils.encoding import force_str
from django.utils.formats import number_format
from django.utils.http import urlsafe_base64_decode
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.utils import get_md5_hash_password

from apps.accounts import lockout
from apps.accounts.models import ApiKey, Invitation, Role, User, UserSession
from apps.accounts.permissions import ROLE_ORDER, role_at_or_below
from apps.audit.services import audit_record
from apps.core.actors import Actor
from apps.core.exceptions import ApplicationError, InvalidInput, QuotaExceeded
from apps.tenants.db import connection
from apps.tenants.selectors import tenant_current, tenant_current_locked

logger = logging.getLogger(__name__)

TENANT_CLAIM = "tenant"
INVITATION_SALT = "hydronet.accounts.invitation"
API_KEY_PREFIX = "hn_"
API_KEY_LOOKUP_LENGTH = 12  # characters after "hn_" kept in clear for lookup and display


class InvalidCredentials(ApplicationError):
    status_code = 401
    code = "invalid_credentials"


# --- Shared rules -----------------------------------------------------------


def normalize_email(email: str) -> str:
    """Emails are compared and stored lower-cased, without surrounding spaces."""
    return (email or "").strip().lower()


def validate_new_password(*, password: str, email: str, full_name: str = "", field: str = "password") -> None:
    """Apply Django's password validators; raise InvalidInput naming ``field``."""
    try:
        validate_password(password, user=User(email=email, full_name=full_name))
    except ValidationError as exc:
        raise InvalidInput(_("Choose a stronger password."), details={field: list(exc.messages)}) from exc


def _valid_email(email: str, *, field: str) -> str:
    email = normalize_email(email)
    try:
        validate_email(email)
    except ValidationError as exc:
        raise InvalidInput(_("Enter a valid email address."), details={field: list(exc.messages)}) from exc
    return email


def _valid_role(role: str, *, actor: Actor) -> str:
    if role not in ROLE_ORDER:
        raise InvalidInput(_("Choose a role."), details={"role": [_("Choose admin, user or viewer.")]})
    ceiling = actor_role(actor)
    if ceiling is not None and not role_at_or_below(role, ceiling):
        message = _("You cannot hand out a role above your own.")
        raise InvalidInput(message, details={"role": [message]})
    return role


def actor_role(actor: Actor) -> str | None:
    """The role an actor acts with; None for the system and the platform."""
    if actor.user is not None:
        return actor.user.role
    if actor.api_key is not None:
        return actor.api_key.role
    return None


def _check_user_quota(*, adding: int = 1) -> None:
    """Active users plus pending invitations may not pass the plan's user limit."""
    from apps.accounts.selectors import user_count_for_quota  # selectors import this module
    from apps.usage.limits import limits_for
    from apps.usage.services import quota_check_count_alerts

    limit = limits_for(tenant_current_locked()).users
    if limit is None:
        return
    used = user_count_for_quota()
    if used + adding > limit:
        raise QuotaExceeded(
            ngettext(
                "The workspace allows %(limit)s user, counting pending invitations.",
                "The workspace allows %(limit)s users, counting pending invitations.",
                limit,
            )
            % {"limit": number_format(limit, force_grouping=True)},  # grouped, as every quota's refusal
            details={"quota": "users", "limit": limit, "used": used, "resets_at": None},
        )
    if used:  # the workspace's first admin, created with it, is not news
        quota_check_count_alerts(quota="users", limit=limit, used_before=used, used_after=used + adding)


def _keep_an_admin(user: User) -> None:
    """Refuse to remove ``user`` from the admins if no other active admin would remain."""
    if user.role != Role.ADMIN or not user.is_active:
        return
    admins = list(User.objects.select_for_update().filter(role=Role.ADMIN, is_active=True).values_list("pk", flat=True))
    if admins == [user.pk]:
        raise ApplicationError(
            _("%(email)s is the last active admin. Make someone else an admin first.") % {"email": user.email},
            code="last_admin",
        )


# --- Members ------------------------------------------------------------------


@transaction.atomic
def user_create(
    *,
    actor: Actor,
    email: str,
    password: str | None,
    role: str = Role.USER,
    full_name: str = "",
    email_field: str = "email",
    password_field: str = "password",  # noqa: S107 (names a form field)
) -> User:
    """Add a member to the current tenant, within the plan's user limit.

    With ``password=None`` the account gets an unusable password, to be set by
    a password reset. ``*_field`` name the input fields errors are reported against.
    An open invitation of the same address is withdrawn: the member takes its seat.
    """
    email = _valid_email(email, field=email_field)
    role = _valid_role(role, actor=actor)
    if password is not None:
        validate_new_password(password=password, email=email, full_name=full_name, field=password_field)
    if User.objects.filter(email=email).exists():  # before the quota: a duplicate at the limit is no 402
        message = _("A user with this email address already exists.")
        raise InvalidInput(message, details={email_field: [message]})
    # An open invitation of the same address gives its seat to the member: it could no longer be accepted, yet it
    # held a seat of the plan's limit for up to its 7 days (QA, 2026-12-07).
    open_invitations = Invitation.objects.filter(email__iexact=email, accepted_at__isnull=True, revoked_at__isnull=True)
    withdrawn = open_invitations.update(revoked_at=timezone.now())
    _check_user_quota()
    user = User(email=email, full_name=full_name.strip()[:150], role=role)
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError as exc:  # a concurrent create of the same email
        message = _("A user with this email address already exists.")
        raise InvalidInput(message, details={email_field: [message]}) from exc
    metadata = {"email": email, "role": role, **({"invitation_withdrawn": True} if withdrawn else {})}
    audit_record(actor=actor, action="user.created", target=user, metadata=metadata)
    return user


@transaction.atomic
def staff_user_create(*, email: str, password: str) -> User:
    """A platform staff user, in the public schema (platform audit covers staff)."""
    email = _valid_email(email, field="email")
    validate_new_password(password=password, email=email)
    return User.objects.create_superuser(email, password)


@transaction.atomic
def user_update_profile(*, actor: Actor, user: User, full_name: str | None = None, language: str | None = None) -> User:
    """Change what members may change about themselves: their name, and the language emails to them are
    written in (``None``: unchanged)."""
    changes: dict[str, list[str]] = {}
    full_name = full_name if full_name is None else full_name.strip()[:150]
    if full_name is not None and full_name != user.full_name:
        changes["full_name"] = [user.full_name, full_name]
    if language is not None and language != user.language:
        if language not in dict(settings.LANGUAGES):
            choices = ", ".join(code for code, _name in settings.LANGUAGES)
            message = _("Choose one of: %(choices)s.") % {"choices": choices}
            raise InvalidInput(message, details={"language": [message]})
        changes["language"] = [user.language, language]
    if not changes:
        return user
    for field, (_before, after) in changes.items():
        setattr(user, field, after)
    user.save(update_fields=list(changes))
    audit_record(actor=actor, action="user.profile_updated", target=user, metadata=changes)
    return user


@transaction.atomic
def user_change_role(*, actor: Actor, user: User, role: str) -> User:
    user = User.objects.select_for_update().get(pk=user.pk)
    role = _valid_role(role, actor=actor)
    if role == user.role:
        return user
    if role != Role.ADMIN:
        _keep_an_admin(user)
    previous = user.role
    user.role = role
    user.save(update_fields=["role"])
    audit_record(actor=actor, action="user.role_changed", target=user, metadata={"role": [previous, role]})
    return user


@transaction.atomic
def user_deactivate(*, actor: Actor, user: User) -> User:
    """Stop a member from signing in; their sessions and refresh tokens end now."""
    user = User.objects.select_for_update().get(pk=user.pk)
    if not user.is_active:
        return user
    _keep_an_admin(user)
    user.is_active = False
    user.tokens_valid_after = timezone.now()  # its access tokens too, for the rest of their 15 minutes
    user.save(update_fields=["is_active", "tokens_valid_after"])
    sessions_end_for_user(user_id=user.pk)
    tokens_revoke_for_user(user=user)
    audit_record(actor=actor, action="user.deactivated", target=user, metadata={"email": user.email})
    return user


@transaction.atomic
def user_reactivate(*, actor: Actor, user: User) -> User:
    user = User.objects.select_for_update().get(pk=user.pk)
    if user.is_active:
        return user
    _check_user_quota()
    user.is_active = True
    user.save(update_fields=["is_active"])
    audit_record(actor=actor, action="user.reactivated", target=user, metadata={"email": user.email})
    return user


@transaction.atomic
def user_delete(*, actor: Actor, user: User) -> None:
    user = User.objects.select_for_update().get(pk=user.pk)
    _keep_an_admin(user)
    sessions_end_for_user(user_id=user.pk)
    tokens_revoke_for_user(user=user)
    audit_record(actor=actor, action="user.deleted", target=user, metadata={"email": user.email, "role": user.role})
    from apps.chat.models import Conversation  # chat's services import these
    from apps.chat.services import conversations_purge

    conversations_purge(conversations=Conversation.objects.filter(user=user))  # two statements, not 200
    user.delete()
    from apps.usage.services import storage_freed  # the member's conversations went with them

    storage_freed(tenant=tenant_current())


@transaction.atomic
def user_change_password(
    *, actor: Actor, user: User, old_password: str, new_password: str, keep_session_key: str | None = None
) -> User:
    """Change one's own password; every other session and every refresh token ends."""
    if not user.check_password(old_password):
        message = _("Your current password is not correct.")
        raise InvalidInput(message, details={"old_password": [message]})
    validate_new_password(password=new_password, email=user.email, full_name=user.full_name, field="new_password")
    user.set_password(new_password)
    user.save(update_fields=["password"])
    sessions_end_for_user(user_id=user.pk, except_session_key=keep_session_key)
    tokens_revoke_for_user(user=user)
    audit_record(actor=actor, action="user.password_changed", target=user)
    return user


# --- Sessions and tokens ------------------------------------------------------


def sessions_end_for_user(*, user_id: int, except_session_key: str | None = None) -> int:
    """Delete the user's web sessions in this schema; return how many ended."""
    sessions = UserSession.objects.filter(user_id=user_id)
    if except_session_key:
        sessions = sessions.exclude(session_key=except_session_key)
    deleted, _by_model = sessions.delete()
    return deleted


def tokens_revoke_for_user(*, user: User) -> int:
    """Blacklist every refresh token the user still holds in this schema."""
    outstanding = OutstandingToken.objects.filter(user=user, expires_at__gt=timezone.now()).exclude(
        blacklistedtoken__isnull=False
    )
    revoked = 0
    for token in outstanding:
        BlacklistedToken.objects.get_or_create(token=token)
        revoked += 1
    return revoked


def token_pair_issue(*, user: User) -> dict[str, str]:
    """A refresh and an access token for ``user``, bound to the current tenant."""
    refresh = RefreshToken.for_user(user)  # recorded as outstanding in this schema
    refresh[TENANT_CLAIM] = connection.schema_name
    return {"refresh": str(refresh), "access": str(refresh.access_token)}


def _refresh_token(raw: str) -> RefreshToken:
    """Parse a refresh token of this tenant; refuse any other, blacklisted or expired."""
    try:
        token = RefreshToken(raw)  # type: ignore[arg-type]  # checks signature, expiry, type, blacklist
    except TokenError as exc:
        raise InvalidCredentials(_("The refresh token is not valid or has expired."), code="token_not_valid") from exc
    if token.get(TENANT_CLAIM) != connection.schema_name:
        raise InvalidCredentials(_("This token belongs to another workspace."), code="token_tenant_mismatch")
    return token


@transaction.atomic
def token_refresh(*, raw: str) -> dict[str, str]:
    """Rotate a refresh token: the old one is blacklisted, a new pair comes back."""
    token = _refresh_token(raw)
    user = User.objects.filter(pk=token.get(jwt_settings.USER_ID_CLAIM), is_active=True).first()
    if user is None:
        raise InvalidCredentials(_("The account is not active."), code="token_not_valid")
    if token.get(jwt_settings.REVOKE_TOKEN_CLAIM) != get_md5_hash_password(user.password):
        raise InvalidCredentials(_("The password changed; log in again."), code="token_not_valid")
    token.blacklist()
    return token_pair_issue(user=user)


@transaction.atomic
def token_revoke(*, actor: Actor, raw: str) -> None:
    """Log out an API client: blacklist its refresh token."""
    token = _refresh_token(raw)
    token.blacklist()
    user = User.objects.filter(pk=token.get(jwt_settings.USER_ID_CLAIM)).first()
    if user is not None:
        audit_record(actor=actor.for_user(user), action="auth.logout", target=user, metadata={"channel": "api"})


# --- Logging in ---------------------------------------------------------------


def login_authenticate(*, request: Any, email: str, password: str, actor: Actor, channel: str) -> User:
    """Check a member's email and password, within the brute-force limits.

    Raises RateLimited while the (tenant, email) or the IP is locked, even for
    the right password, and InvalidCredentials otherwise; the message never
    says whether the email exists. Both outcomes are audited.
    """
    email = normalize_email(email)
    subjects = lockout.login_subjects(schema=connection.schema_name, email=email, ip=actor.ip)
    lockout.check(subjects)
    user = authenticate(request, username=email, password=password)
    if user is None:
        locked = lockout.record_failure(subjects)
        target = User.objects.filter(email=email).first()
        with transaction.atomic():
            audit_record(
                actor=actor,
                action="auth.login_failed",
                target=target,
                metadata={"email": email, "channel": channel},
            )
            if locked:
                audit_record(actor=actor, action="auth.lockout", target=target, metadata={"email": email})
        raise InvalidCredentials(_("The email or password is not correct."))
    assert isinstance(user, User)
    lockout.clear(subjects[:1])
    with transaction.atomic():
        audit_record(actor=actor.for_user(user), action="auth.login", target=user, metadata={"channel": channel})
    return user


def web_logout_record(*, actor: Actor) -> None:
    if actor.user is not None:
        audit_record(actor=actor, action="auth.logout", target=actor.user, metadata={"channel": "web"})


# --- Invitations --------------------------------------------------------------


def invitation_token(invitation: Invitation) -> str:
    """The token in an invitation's link, derived from its id and nonce by the server's key."""
    return signing.dumps({"i": invitation.pk, "n": invitation.nonce}, salt=INVITATION_SALT, compress=True)


def invitation_url(invitation: Invitation) -> str:
    from apps.tenants.selectors import tenant_current

    return f"{tenant_current().url}invitations/accept/{invitation_token(invitation)}/"


@transaction.atomic
def invitation_create(*, actor: Actor, email: str, role: str = Role.USER) -> Invitation:
    """Invite someone by email; the link works once, for INVITATION_DAYS days."""
    email = _valid_email(email, field="email")
    role = _valid_role(role, actor=actor)
    if User.objects.filter(email=email).exists():
        message = _("This person is already a member.")
        raise InvalidInput(message, details={"email": [message]})
    # A stale invitation to the same address gives way to the new one.
    Invitation.objects.filter(email=email, accepted_at__isnull=True, revoked_at__isnull=True).filter(
        expires_at__lte=timezone.now()
    ).update(revoked_at=timezone.now())
    already = _("This address already has an open invitation. Revoke it to send a new one.")
    if Invitation.objects.filter(email=email, accepted_at__isnull=True, revoked_at__isnull=True).exists():
        raise InvalidInput(already, details={"email": [already]})
    _check_user_quota()
    try:
        with transaction.atomic():
            invitation = Invitation.objects.create(
                email=email,
                role=role,
                nonce=secrets.token_hex(16),
                invited_by=actor.user,
                expires_at=timezone.now() + timedelta(days=settings.INVITATION_DAYS),
            )
    except IntegrityError as exc:  # a concurrent invitation of the same address (one open per address)
        raise InvalidInput(already, details={"email": [already]}) from exc
    audit_record(actor=actor, action="user.invited", target=invitation, metadata={"email": email, "role": role})
    from apps.accounts.tasks import send_invitation_email

    args, schema = [invitation.pk, translation.get_language() or "zh-hans"], connection.schema_name
    transaction.on_commit(
        lambda: send_invitation_email.apply_async(args=args, headers={"_schema_name": schema}), robust=True
    )
    return invitation


@transaction.atomic
def invitation_revoke(*, actor: Actor, invitation: Invitation) -> Invitation:
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.accepted_at is not None or invitation.revoked_at is not None:
        raise ApplicationError(_("This invitation is no longer open."), code="invalid_state")
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit_record(actor=actor, action="user.invitation_revoked", target=invitation, metadata={"email": invitation.email})
    return invitation


class InvitationInvalid(InvalidInput):
    code = "invitation_invalid"


def invitation_from_token(token: str) -> Invitation:
    """The open invitation behind a link's token, or InvitationInvalid saying why not."""
    try:
        payload = signing.loads(token, salt=INVITATION_SALT)
        invitation = Invitation.objects.get(pk=int(payload["i"]))
    except (signing.BadSignature, KeyError, TypeError, ValueError, Invitation.DoesNotExist) as exc:
        raise InvitationInvalid(_("This invitation link is not valid.")) from exc
    if not hmac.compare_digest(str(payload.get("n", "")), invitation.nonce):
        raise InvitationInvalid(_("This invitation link is not valid."))
    if invitation.accepted_at is not None:
        raise InvitationInvalid(_("This invitation has already been used. Log in instead."))
    if invitation.revoked_at is not None:
        raise InvitationInvalid(_("This invitation was withdrawn. Ask for a new one."))
    if invitation.expires_at <= timezone.now():
        raise InvitationInvalid(_("This invitation has expired. Ask for a new one."))
    return invitation


@transaction.atomic
def invitation_accept(*, token: str, password: str, full_name: str, actor: Actor) -> User:
    """Turn an invitation into a member with the password the invitee chose. Once only."""
    invitation = invitation_from_token(token)
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.accepted_at is not None or invitation.revoked_at is not None:
        raise InvitationInvalid(_("This invitation has already been used. Log in instead."))
    validate_new_password(password=password, email=invitation.email, full_name=full_name)
    if User.objects.filter(email=invitation.email).exists():
        raise InvitationInvalid(_("This invitation has already been used. Log in instead."))
    user = User(email=invitation.email, full_name=full_name.strip()[:150], role=invitation.role)
    user.set_password(password)
    user.save()
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    audit_record(
        actor=actor.for_user(user),
        action="user.invitation_accepted",
        target=user,
        metadata={"invitation": invitation.pk, "role": user.role},
    )
    return user


# --- Password reset -----------------------------------------------------------


def password_reset_request(*, email: str, actor: Actor) -> None:
    """Email a reset link if the address belongs to an active member. Says nothing either way.

    Counted like failed logins: too many requests for one address or from one
    IP address get 429.
    """
    email = normalize_email(email)
    subjects = lockout.reset_subjects(schema=connection.schema_name, email=email, ip=actor.ip)
    lockout.check(subjects)
    lockout.record_failure(subjects)
    user = User.objects.filter(email=email, is_active=True).first()
    if user is None:
        return
    from apps.accounts.tasks import send_password_reset_email

    with transaction.atomic():
        audit_record(actor=actor, action="user.password_reset_requested", target=user, metadata={"email": email})
        args, schema = [user.pk, translation.get_language() or "zh-hans"], connection.schema_name
        transaction.on_commit(
            lambda: send_password_reset_email.apply_async(args=args, headers={"_schema_name": schema}), robust=True
        )


def password_reset_user(*, uidb64: str, token: str) -> User:
    """The member a reset link is for, if its token is still good."""
    try:
        user = User.objects.get(pk=int(force_str(urlsafe_base64_decode(uidb64))), is_active=True)
    except (TypeError, ValueError, OverflowError, User.DoesNotExist) as exc:
        raise InvalidInput(_("This password reset link is not valid or has expired.")) from exc
    if not default_token_generator.check_token(user, token):
        raise InvalidInput(_("This password reset link is not valid or has expired."))
    return user


@transaction.atomic
def password_reset_confirm(*, uidb64: str, token: str, new_password: str, actor: Actor) -> User:
    """Set a new password from a reset link; the link then stops working, as do all sessions."""
    user = password_reset_user(uidb64=uidb64, token=token)
    validate_new_password(password=new_password, email=user.email, full_name=user.full_name, field="new_password")
    user.set_password(new_password)
    user.save(update_fields=["password"])
    sessions_end_for_user(user_id=user.pk)
    tokens_revoke_for_user(user=user)
    audit_record(actor=actor.for_user(user), action="user.password_reset", target=user)
    return user


# --- API keys -----------------------------------------------------------------


def _api_key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def api_key_create(*, actor: Actor, name: str, role: str, expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """Create a key; return it with its secret, which is never stored or shown again."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        message = _("Give the key a name of 1 to 100 characters.")
        raise InvalidInput(message, details={"name": [message]})
    role = _valid_role(role, actor=actor)
    if expires_at is not None and expires_at <= timezone.now():
        message = _("The expiry must be in the future.")
        raise InvalidInput(message, details={"expires_at": [message]})
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        name=name,
        role=role,
        prefix=secret[len(API_KEY_PREFIX) : len(API_KEY_PREFIX) + API_KEY_LOOKUP_LENGTH],
        secret_hash=_api_key_hash(secret),
        created_by=actor.user,
        expires_at=expires_at,
    )
    audit_record(actor=actor, action="api_key.created", target=api_key, metadata={"name": name, "role": role})
    return api_key, secret


@transaction.atomic
def api_key_revoke(*, actor: Actor, api_key: ApiKey) -> ApiKey:
    api_key = ApiKey.objects.select_for_update().get(pk=api_key.pk)
    if api_key.revoked_at is not None:
        return api_key
    api_key.revoked_at = timezone.now()
    api_key.save(update_fields=["revoked_at"])
    audit_record(actor=actor, action="api_key.revoked", target=api_key, metadata={"name": api_key.name})
    return api_key


def api_key_authenticate(*, secret: str, ip: str | None) -> ApiKey:
    """The usable key behind ``secret``; InvalidCredentials otherwise. Guesses are locked out per IP."""
    subjects = lockout.api_key_subjects(ip=ip)
    lockout.check(subjects)
    from apps.accounts.selectors import api_key_by_prefix  # selectors import this module

    prefix = secret[len(API_KEY_PREFIX) : len(API_KEY_PREFIX) + API_KEY_LOOKUP_LENGTH]
    api_key = api_key_by_prefix(prefix) if secret.startswith(API_KEY_PREFIX) else None
    if api_key is None or not hmac.compare_digest(api_key.secret_hash, _api_key_hash(secret)):
        if lockout.record_failure(subjects):
            with transaction.atomic():
                audit_record(
                    actor=Actor(label="anonymous", ip=ip), action="auth.lockout", metadata={"credential": "api_key"}
                )
        raise InvalidCredentials(_("The API key is not valid."))
    if not api_key.is_usable:
        raise InvalidCredentials(_("The API key has been revoked or has expired."))
    now = timezone.now()
    resolution = timedelta(seconds=settings.API_KEY_LAST_USED_RESOLUTION_SECONDS)
    if api_key.last_used_at is None or now - api_key.last_used_at > resolution:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key
