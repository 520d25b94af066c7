from __future__ import annotations

from typing import Any

from django.contrib.auth.tokens import default_token_generator
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from apps.accounts.models import Invitation, User
from apps.accounts.sessions import SessionStore
from apps.core.mail import MailDeferred, mail_send, retry_later
from apps.tenants.selectors import tenant_current
from apps.tenants.tasks import queue_for_each_tenant
from config.celery import platform_task, tenant_task


def _send(task: Any, template: str, context: dict[str, object], to: str, language: str) -> None:
    """Send ``template`` to ``to``; a mail server that cannot take it now gets it again later (apps.core.mail)."""
    with translation.override(language):
        subject = render_to_string(f"accounts/email/{template}_subject.txt", context).strip()
        body = render_to_string(f"accounts/email/{template}.txt", context)
    try:
        mail_send(subject, body, [to])
    except MailDeferred as exc:
        raise retry_later(task, exc) from exc


@tenant_task(bind=True)
def send_welcome_email(self: Any, user_id: int, language: str = "zh-hans") -> str:
    """Tell a new workspace's first admin where to log in. Returns the address it wrote to."""
    user = User.objects.get(pk=user_id)
    tenant = tenant_current()
    _send(self, "welcome", {"user": user, "tenant": tenant, "login_url": f"{tenant.url}login/"}, user.email, language)
    return user.email


@tenant_task(bind=True)
def send_invitation_email(self: Any, invitation_id: int, language: str = "zh-hans") -> str | None:
    """Email an invitation's link; the token is derived here, never stored or queued."""
    from apps.accounts.services import invitation_url

    invitation = Invitation.objects.select_related("invited_by").get(pk=invitation_id)
    if not invitation.is_pending:
        return None
    context = {"invitation": invitation, "tenant": tenant_current(), "accept_url": invitation_url(invitation)}
    _send(self, "invitation", context, invitation.email, language)
    return invitation.email


@tenant_task(bind=True)
def send_password_reset_email(self: Any, user_id: int, language: str = "zh-hans") -> str | None:
    """Email a reset link; its token is derived from the user's current state, so it works once."""
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return None
    tenant = tenant_current()
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    url = f"{tenant.url}password-reset/{uid}/{default_token_generator.make_token(user)}/"
    _send(self, "password_reset", {"user": user, "tenant": tenant, "reset_url": url}, user.email, language)
    return user.email


@tenant_task()
def clear_expired_sessions() -> None:
    """Sessions live in each tenant's schema, so each schema is cleared on its own."""
    SessionStore.clear_expired()


@platform_task()
def clear_expired_sessions_everywhere() -> int:
    """Clear the platform's own expired sessions, then queue the same for every tenant."""
    SessionStore.clear_expired()
    return queue_for_each_tenant(clear_expired_sessions)
