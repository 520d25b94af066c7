"""Quota alert emails reach a real mail server on loopback, and a mail server that cannot take them now gets them
again later: by the task's retries, then by the sweep every ten minutes (``resend_unsent_alert_emails``)."""

from __future__ import annotations

import datetime as dt
import smtplib
from collections.abc import Iterator

import psycopg
import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.accounts.models import Role
from apps.core.mail import RETRIES, MailDeferred, mail_send
from apps.usage import limits as L
from apps.usage.models import QuotaAlert
from apps.usage.tasks import quota_alert_email_send, resend_unsent_alert_emails, send_quota_alert_email
from tests.conftest import TenantFixture, make_member
from tests.mail_server import SmtpServer, free_port
from tests.usage.conftest import direct_dsn

pytestmark = pytest.mark.django_db

DEFER = "451 4.3.0 Try again later"


def alert(threshold: int = 90, *, age: dt.timedelta = dt.timedelta(0), **fields: object) -> QuotaAlert:
    """An alert of this month's API calls (in the current schema), fired ``age`` ago."""
    made = QuotaAlert.objects.create(
        quota="api_calls", period=L.period_start(L.today()), threshold=threshold, limit=100, used=threshold, **fields
    )
    QuotaAlert.objects.filter(pk=made.pk).update(created_at=timezone.now() - age)
    return made


def test_the_alert_reaches_the_mail_server_once_with_every_admin(
    smtp_server: SmtpServer, tenant_alpha: TenantFixture
) -> None:
    other = make_member(tenant_alpha, Role.ADMIN)
    make_member(tenant_alpha, Role.USER)
    with schema_context(tenant_alpha.tenant.schema_name):
        sent = alert(90)
        assert sorted(send_quota_alert_email.apply(args=[sent.pk, "en"]).get()) == sorted(
            [tenant_alpha.admin_email, other.email]
        )
        sent.refresh_from_db()
    assert sent.emailed_at is not None
    assert smtp_server.recipients == [[tenant_alpha.admin_email, other.email]]
    (message,) = smtp_server.received
    assert "90%" in message["Subject"]


def test_a_mail_server_that_defers_gets_the_alert_again_until_it_takes_it(
    smtp_server: SmtpServer, tenant_alpha: TenantFixture
) -> None:
    """A 4xx (a busy or restarting server) was the task's end: the alert, which fires once a month, was lost."""
    smtp_server.replies = [DEFER, "421 4.7.0 Too busy, come back later"]
    with schema_context(tenant_alpha.tenant.schema_name):
        sent = alert(100)
        assert send_quota_alert_email.apply(args=[sent.pk, "en"]).get() == [tenant_alpha.admin_email]
        sent.refresh_from_db()
    assert smtp_server.attempts == 3
    assert len(smtp_server.received) == 1
    assert sent.emailed_at is not None


def test_a_mail_server_that_refuses_is_not_asked_again_at_once(
    smtp_server: SmtpServer, tenant_alpha: TenantFixture
) -> None:
    """A 5xx gives the same answer a minute later: the task fails (and logs) instead of retrying."""
    smtp_server.replies = ["550 5.7.1 Relaying denied"]
    with schema_context(tenant_alpha.tenant.schema_name):
        refused = alert(80)
        with pytest.raises(smtplib.SMTPDataError):
            send_quota_alert_email.apply(args=[refused.pk, "en"]).get()
        refused.refresh_from_db()
    assert smtp_server.attempts == 1
    assert refused.emailed_at is None


def test_after_the_retries_the_sweep_sends_it_once(smtp_server: SmtpServer, tenant_alpha: TenantFixture) -> None:
    smtp_server.replies = [DEFER] * (RETRIES + 1)
    with schema_context(tenant_alpha.tenant.schema_name):
        late = alert(100)
        with pytest.raises(MailDeferred):
            send_quota_alert_email.apply(args=[late.pk, "en"]).get()
        assert smtp_server.attempts == RETRIES + 1
        assert resend_unsent_alert_emails() == []  # fired just now: left to the task's retries
        QuotaAlert.objects.filter(pk=late.pk).update(created_at=timezone.now() - dt.timedelta(minutes=31))
        assert resend_unsent_alert_emails() == [late.pk]
        assert resend_unsent_alert_emails() == []
    assert len(smtp_server.received) == 1


def test_the_sweep_leaves_alone_what_was_sent_skipped_stale_or_of_another_month(
    smtp_server: SmtpServer, tenant_alpha: TenantFixture
) -> None:
    half_hour = dt.timedelta(minutes=31)
    with schema_context(tenant_alpha.tenant.schema_name):
        alert(80, age=half_hour, emailed_at=timezone.now())
        alert(90, age=half_hour, email_skipped=True)
        alert(100, age=dt.timedelta(days=4))
        QuotaAlert.objects.create(quota="users", period=L.period_start(L.today()) - dt.timedelta(days=40),
                                  threshold=100, limit=5, used=5)  # fmt: skip
        QuotaAlert.objects.filter(quota="users").update(created_at=timezone.now() - half_hour)
        assert resend_unsent_alert_emails() == []
    assert smtp_server.attempts == 0


def test_an_alert_that_says_nothing_new_is_marked_and_not_swept_again(
    smtp_server: SmtpServer, tenant_alpha: TenantFixture
) -> None:
    with schema_context(tenant_alpha.tenant.schema_name):
        ninety = alert(90, age=dt.timedelta(minutes=31))
        alert(100, emailed_at=timezone.now())
        assert resend_unsent_alert_emails() == []
        ninety.refresh_from_db()
    assert ninety.email_skipped
    assert smtp_server.attempts == 0


@pytest.fixture
def committed_alert(tenant_alpha: TenantFixture) -> Iterator[int]:
    """An alert committed outside the test's transaction (another connection can lock it), deleted after."""
    schema = tenant_alpha.tenant.schema_name
    with psycopg.connect(**direct_dsn(), autocommit=True) as setup:
        row = setup.execute(
            f'INSERT INTO "{schema}".usage_quotaalert (quota, period, threshold, "limit", used, created_at) '
            "VALUES ('api_calls', %s, 90, 100, 90, now()) RETURNING id",
            [L.period_start(L.today())],
        ).fetchone()
    assert row is not None
    alert_id = int(row[0])
    yield alert_id
    with psycopg.connect(**direct_dsn(), autocommit=True) as cleanup:
        cleanup.execute(f'DELETE FROM "{schema}".usage_quotaalert WHERE id = %s', [alert_id])


def test_an_alert_being_sent_elsewhere_is_not_sent_again(
    smtp_server: SmtpServer, tenant_alpha: TenantFixture, committed_alert: int
) -> None:
    """A task's retry and the sweep overlapping: the one that finds the alert's row locked leaves it."""
    schema = tenant_alpha.tenant.schema_name
    with psycopg.connect(**direct_dsn()) as sender:  # sending it: its row locked until it commits
        sender.execute(f'SELECT id FROM "{schema}".usage_quotaalert WHERE id = %s FOR UPDATE', [committed_alert])
        with schema_context(schema):
            assert quota_alert_email_send(alert_id=committed_alert, language="en") == []
        sender.rollback()
    assert smtp_server.attempts == 0


def test_what_may_pass_is_told_from_what_will_not(smtp_server: SmtpServer, settings: object) -> None:
    smtp_server.replies = [DEFER, "554 5.7.1 Rejected"]
    with pytest.raises(MailDeferred):
        mail_send("s", "b", ["a@example.com"])
    with pytest.raises(smtplib.SMTPDataError):
        mail_send("s", "b", ["a@example.com"])
    settings.EMAIL_PORT = free_port()  # type: ignore[attr-defined]  # nothing listens there
    with pytest.raises(MailDeferred):
        mail_send("s", "b", ["a@example.com"])
