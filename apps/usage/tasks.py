from __future__ import annotations

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.utils import timezone, translation

from apps.accounts.models import Role, User
from apps.tenants.selectors import tenant_current
from apps.usage.models import QuotaAlert
from apps.usage.services import storage_measure, usage_flush
from config.celery import tenant_task


@tenant_task()
def flush_usage() -> int:
    """Every minute, per tenant: move the ledger into usage_stats. Returns how many calls moved."""
    return usage_flush()


@tenant_task()
def measure_storage() -> int:
    """Every ten minutes per tenant, and after large writes: the schema's size in bytes."""
    return storage_measure(tenant=tenant_current())


@tenant_task()
def send_quota_alert_email(alert_id: int, language: str = "zh-hans") -> list[str]:
    """Tell the tenant's active admins that a quota crossed a threshold. Returns who was written to."""
    alert = QuotaAlert.objects.filter(pk=alert_id, emailed_at__isnull=True).first()
    if alert is None:  # already sent (a retried task) or gone
        return []
    tenant = tenant_current()
    admins = list(User.objects.filter(role=Role.ADMIN, is_active=True).values_list("email", flat=True))
    context = {"alert": alert, "tenant": tenant, "usage_url": f"{tenant.url}usage/"}
    with translation.override(language):
        context["quota_name"] = alert.get_quota_display()
        subject = render_to_string("usage/email/quota_alert_subject.txt", context).strip()
        body = render_to_string("usage/email/quota_alert.txt", context)
    if admins:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, admins)
    QuotaAlert.objects.filter(pk=alert.pk).update(emailed_at=timezone.now())
    return admins
