from __future__ import annotations

from django.contrib.sessions.backends.db import SessionStore
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.utils import translation

from apps.accounts.models import User
from apps.tenants.db import connection
from apps.tenants.tasks import queue_for_each_tenant
from config.celery import platform_task, tenant_task


@tenant_task()
def send_welcome_email(user_id: int, language: str = "zh-hans") -> str:
    """Tell a new workspace's first admin where to log in. Returns the address it wrote to."""
    user = User.objects.get(pk=user_id)
    tenant = connection.tenant
    with translation.override(language):
        context = {"user": user, "tenant": tenant, "login_url": f"{tenant.url}login/"}
        subject = render_to_string("accounts/email/welcome_subject.txt", context).strip()
        body = render_to_string("accounts/email/welcome.txt", context)
    send_mail(subject, body, None, [user.email])
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
