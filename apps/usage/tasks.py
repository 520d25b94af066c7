from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from apps.accounts.models import Role, User
from apps.core.mail import MailDeferred, mail_send, retry_later
from apps.core.templatetags.times import zoned
from apps.plans.models import Plan, fen_to_yuan
from apps.tenants.models import Tenant
from apps.tenants.selectors import tenant_current
from apps.usage import limits as L
from apps.usage.models import SPENDING_CAP, Quota, QuotaAlert
from apps.usage.services import (
    calls_alerts_catch_up,
    quota_alerts_catch_up,
    quota_alerts_restate,
    storage_measure,
    storage_reclaim,
    usage_flush,
)
from config.celery import tenant_task

logger = logging.getLogger(__name__)


@tenant_task()
def flush_usage() -> int:
    """Every minute, per tenant: move the ledger into usage_stats. Returns how many calls moved."""
    moved = usage_flush()
    if moved:
        calls_alerts_catch_up(tenant=tenant_current())
    return moved


@tenant_task()
def alerts_after_limits_lowered(quotas: list[str], restate: list[str] | None = None) -> dict[str, list[int]]:
    """After staff lowered limits (another plan, an override): the thresholds the use is now past, raised once.
    ``restate``: the quotas at which work now stops where it went on before, their 100 % alert emailed again.
    Returns the new thresholds by quota."""
    tenant = tenant_current()
    fired = quota_alerts_catch_up(tenant=tenant, quotas=quotas)
    if restate and (restated := quota_alerts_restate(tenant=tenant, quotas=restate)):
        logger.info("the 100%% alerts of %s emailed again in %s: work stops there now", restated, tenant.schema_name)
    return fired


@tenant_task()
def reclaim_storage() -> int:
    """After members deleted data on a plan that stops at its storage quota: the space given back, then measured."""
    return storage_reclaim(tenant=tenant_current())


@tenant_task()
def measure_storage() -> int:
    """Every ten minutes per tenant, and after large writes: the schema's size in bytes."""
    return storage_measure(tenant=tenant_current())


@tenant_task(bind=True)
def send_quota_alert_email(self: Any, alert_id: int, language: str = "zh-hans") -> list[str]:
    """Tell the tenant's active admins that a quota crossed a threshold. Returns who was written to.

    A mail server that cannot take it now (``apps.core.mail``) gets it again later, for about 20 minutes; then
    ``resend_unsent_alert_emails`` tries every ten minutes."""
    try:
        return quota_alert_email_send(alert_id=alert_id, language=language)
    except MailDeferred as exc:
        raise retry_later(self, exc) from exc


@tenant_task()
def resend_unsent_alert_emails() -> list[int]:
    """Every ten minutes per tenant: one more try for each of this month's alerts whose email is still unsent a
    while after it fired (the mail server was down past the task's retries, or the broker lost the task). Returns
    the alerts whose email went out."""
    now = timezone.now()
    unsent = QuotaAlert.objects.filter(
        period=L.period_start(L.today(now)),
        emailed_at__isnull=True,
        email_skipped=False,
        created_at__lt=now - UNSENT_AFTER,
        created_at__gte=now - UNSENT_GIVEN_UP_AFTER,
    ).order_by("created_at", "id")
    sent = []
    for alert_id in unsent.values_list("id", flat=True):
        try:
            if quota_alert_email_send(alert_id=alert_id, language=settings.LANGUAGE_CODE):
                sent.append(alert_id)
        except MailDeferred as exc:  # the next sweep tries again; the others may fare better meanwhile
            logger.warning("the email of quota alert %s is still unsent: %s", alert_id, exc)
    return sent


#: An alert's email is left to the task's own retries for this long (about 20 minutes, apps.core.mail), then swept.
UNSENT_AFTER = dt.timedelta(minutes=30)
#: An alert not emailed after this long is stale (the banner still shows it): no longer tried.
UNSENT_GIVEN_UP_AFTER = dt.timedelta(days=3)


def quota_alert_email_send(*, alert_id: int, language: str) -> list[str]:
    """Email ``alert_id`` to the tenant's active admins, each in their own language (``language`` for who has
    none), unless it went already or says nothing new. Returns who was written to; raises MailDeferred.

    The alert's row is locked while it is sent, so a retry and a sweep that overlap send it once; a failure rolls
    back and leaves it unsent."""
    with transaction.atomic():
        alert = (
            QuotaAlert.objects.select_for_update(skip_locked=True)
            .filter(pk=alert_id, emailed_at__isnull=True, email_skipped=False)
            .first()
        )
        if alert is None:  # sent or skipped already, being sent now, or gone
            return []
        tenant = tenant_current()
        limits = L.limits_for(tenant)
        if _says_nothing_new(alert, limits):
            QuotaAlert.objects.filter(pk=alert.pk).update(email_skipped=True)
            return []
        by_language: dict[str, list[str]] = {}
        for email, own in User.objects.filter(role=Role.ADMIN, is_active=True).values_list("email", "language"):
            by_language.setdefault(own or language, []).append(email)
        for each, admins in sorted(by_language.items()):
            subject, body = _alert_email(alert, tenant, limits, each)
            mail_send(subject, body, admins)
        QuotaAlert.objects.filter(pk=alert.pk).update(emailed_at=timezone.now())
    return [email for admins in by_language.values() for email in admins]


def _says_nothing_new(alert: QuotaAlert, limits: L.Limits) -> bool:
    higher = QuotaAlert.objects.filter(quota=alert.quota, period=alert.period, limit=alert.limit,
                                       threshold__gt=alert.threshold)  # fmt: skip
    if higher.exists():
        # A higher threshold of the same limit and month came first, in a concurrent request: its email says more,
        # and this one, sent after it, told the admins "nothing stops yet" of calls already stopped. One of another
        # limit (the plan before) says nothing of this one.
        return True
    # The admins changed the cap since: calls no longer stop at this one.
    return alert.quota == SPENDING_CAP and limits.spending_cap_fen != alert.limit


def _alert_email(alert: QuotaAlert, tenant: Tenant, limits: L.Limits, language: str) -> tuple[str, str]:
    """The alert's email in ``language``: its subject and body."""
    context = {"alert": alert, "tenant": tenant, "usage_url": f"{tenant.url}usage/"}
    with translation.override(language):
        if alert.quota == SPENDING_CAP:  # in fen: the cap, and the month's overage, grouped in each language
            context.update(cap=fen_to_yuan(alert.limit), overage=fen_to_yuan(alert.used))
        context["quota_name"] = alert.get_quota_display()
        context["quota_units"] = _units(alert.quota)
        context["consequence"] = _consequence(alert, limits, tenant.plan)
        subject = render_to_string("usage/email/quota_alert_subject.txt", context).strip()
        body = render_to_string("usage/email/quota_alert.txt", context)
    return subject, body


def _units(quota: str) -> str:
    """What a count quota counts, as a sentence names it ("5 of its 5 members")."""
    units: dict[str, str] = {Quota.USERS.value: _("members"), Quota.MCP_SERVICES.value: _("MCP services")}
    return units.get(quota, _("API calls"))


def _consequence(alert: QuotaAlert, limits: L.Limits, plan: Plan | None) -> str:
    """What the threshold means for this workspace, on its plan as it is now."""
    if alert.threshold < 100:
        return _("Nothing stops yet.")
    if alert.quota == SPENDING_CAP:
        return _cap_stopped(alert)
    if alert.quota == Quota.USERS:
        return _("No more members can be added or invited until some are removed or the plan changes.")
    if alert.quota == Quota.MCP_SERVICES:
        return _("No more MCP services can be added or enabled until some are removed or the plan changes.")
    if alert.quota == Quota.STORAGE:
        return _storage_consequence(limits, plan)
    return _calls_consequence(alert, limits)


def _storage_consequence(limits: L.Limits, plan: Plan | None) -> str:
    if limits.storage_stop_at is not None:
        return _("AI calls and new data are stopped until space is freed or the plan changes.")
    if plan is None or plan.overage_fen_per_gb_month is None:  # a staff override on a plan with no price
        return _("Nothing stops: the plan goes on past its storage quota.")
    return _("Further storage is billed as overage.")


def _calls_consequence(alert: QuotaAlert, limits: L.Limits) -> str:
    if limits.stops_at_quota:
        # The moment in the zone the emails use, named ("2027-01-01 08:00 UTC+8"): a bare date read as local midnight.
        resets = zoned(L.resets_at(alert.period))
        return _("AI calls are stopped until the quota resets on %(date)s.") % {"date": resets}
    if limits.calls_stop_at is not None and alert.used >= limits.calls_stop_at:
        # Already past the cap (a limit raised to below the month's calls, alerted by the flush's catch-up): "billed
        # as overage, until the cap" would tell of calls that stopped before.
        return _cap_stopped(alert)
    if limits.spending_cap_fen is not None:
        return _("Further calls are billed as overage, until this month's overage reaches the spending cap of "
                 "¥%(cap)s.") % {"cap": fen_to_yuan(limits.spending_cap_fen)}  # fmt: skip
    return _("Further calls are billed as overage.")


def _cap_stopped(alert: QuotaAlert) -> str:
    return _("AI calls are stopped until an admin raises the cap or the quota resets on %(date)s.") % {
        "date": zoned(L.resets_at(alert.period))
    }
