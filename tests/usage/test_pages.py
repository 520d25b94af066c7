"""The usage page and the quota banner: who sees what, the spending-cap form, both languages."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.core import mail
from django.db import connection as db_connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context

from apps.accounts.models import Role
from apps.accounts.permissions import Perm, role_has
from apps.accounts.selectors import user_count_for_quota
from apps.accounts.services import api_key_create, api_key_revoke
from apps.audit.models import AuditEvent
from apps.core.templatetags.times import zoned
from apps.tenants.models import Tenant
from apps.tenants.services import tenant_provision
from apps.usage import limits as L
from apps.usage.meter import day_key, month_key, redis_client, storage_key
from apps.usage.models import ApiKeyUsage, QuotaAlert, UsageStat
from apps.usage.tasks import send_quota_alert_email
from tests.accounts.test_pages import logged_in
from tests.conftest import ADMIN_PASSWORD, TEST_ACTOR, TenantFixture, admin_of, make_member
from tests.usage.conftest import set_limits

pytestmark = pytest.mark.django_db


def stat(tenant: TenantFixture, user_id: int | None, calls: int, tokens: int, day: dt.date | None = None) -> None:
    with schema_context(tenant.tenant.schema_name):
        UsageStat.objects.create(user_id=user_id, date=day or L.today(), api_calls=calls, tokens_used=tokens)


def alert(tenant: TenantFixture | Tenant, quota: str, threshold: int, period: dt.date | None = None) -> None:
    """An alert recorded; one of this month also has the quota's use stand at its threshold, as the banner needs."""
    row = tenant.tenant if isinstance(tenant, TenantFixture) else tenant
    with schema_context(row.schema_name):
        QuotaAlert.objects.create(quota=quota, period=period or L.period_start(L.today()), threshold=threshold,
                                  limit=1000, used=threshold * 10)  # fmt: skip
        if period is None:
            stand_at(row, quota, threshold)


def stand_at(tenant: Tenant, quota: str, percent: int) -> None:
    """The quota's use now at least ``percent`` of its limit (users: at the limit)."""
    redis = redis_client()
    if quota == "api_calls":
        set_limits(tenant, api_calls_per_month_override=1000)
        key = month_key(tenant.schema_name, L.today())
        redis.hset(key, "calls", max(int(redis.hget(key, "calls") or 0), percent * 10))
    elif quota == "storage":
        set_limits(tenant, storage_mb_override=1000)
        used = max(int(redis.get(storage_key(tenant.schema_name)) or 0), percent * 10 * L.MB)
        redis.set(storage_key(tenant.schema_name), used)
    else:
        assert quota == "users", quota
        set_limits(tenant, max_users_override=user_count_for_quota())


def member_client(tenant: TenantFixture, role: str) -> tuple[Client, Any]:
    member = make_member(tenant, role)
    client = tenant.client(HTTP_ACCEPT_LANGUAGE="en")
    assert client.post("/login/", {"username": member.email, "password": ADMIN_PASSWORD}).status_code == 302
    return client, member


def text_of(page: str, name: str) -> str:
    """The text inside the element with data-testid=name (its first line of content)."""
    match = re.search(rf'data-testid="{name}"[^>]*>([^<]*)<', page)
    assert match, f"no {name} on the page"
    return match.group(1).strip()


def forget_live_counters(tenant: TenantFixture) -> None:
    """Rows written straight to usage_stats: make the quota read them (Redis rebuilds from PostgreSQL)."""
    schema = tenant.tenant.schema_name
    redis_client().delete(month_key(schema, L.today()), day_key(schema, L.today()))


def cap_of(tenant: TenantFixture) -> int | None:
    return Tenant.objects.get(pk=tenant.tenant.pk).spending_cap_fen


def cap_events(tenant: TenantFixture) -> list[AuditEvent]:
    with schema_context(tenant.tenant.schema_name):
        return list(AuditEvent.objects.filter(action="billing.spending_cap_set").order_by("id"))


# --- Who sees what -------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.ADMIN, Role.USER, Role.VIEWER])
def test_the_page_follows_the_roles(tenant_alpha: TenantFixture, role: str) -> None:
    client = logged_in(tenant_alpha, role)
    response = client.get("/usage/")
    assert response.status_code == 200
    page = response.content.decode()
    everyone = role_has(role, Perm.VIEW_STATS)
    assert f'data-scope="{"tenant" if everyone else "user"}"' in page
    assert ("The whole workspace" in page) is everyone
    assert ("Your own calls only" in page) is not everyone
    for part in ('data-testid="usage-members"', 'data-testid="quotas"', 'data-testid="storage-used"'):
        assert (part in page) is everyone
    assert ('data-testid="spending-cap-form"' in page) is role_has(role, Perm.MANAGE_BILLING)
    # Every member has a usage page, so every member has the link.
    assert 'data-testid="nav-usage"' in client.get("/dashboard/").content.decode()
    assert 'id="usage-series"' in page
    assert 'data-testid="chart-calls"' in page
    assert 'data-testid="chart-tokens"' in page


def test_the_page_needs_a_login(tenant_alpha: TenantFixture) -> None:
    for path in ("/usage/", "/usage/spending-cap/"):
        response = tenant_alpha.client().get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=")
    assert tenant_alpha.client().post("/usage/spending-cap/", {"cap_yuan": "5"}).status_code == 302


def test_admins_see_the_tenant_and_each_member_others_their_own(tenant_alpha: TenantFixture) -> None:
    user_client, user = member_client(tenant_alpha, Role.USER)
    viewer_client, viewer = member_client(tenant_alpha, Role.VIEWER)
    other = make_member(tenant_alpha, Role.USER)
    today = L.today()
    stat(tenant_alpha, user.pk, calls=7, tokens=70)
    stat(tenant_alpha, other.pk, calls=500, tokens=5000)
    stat(tenant_alpha, None, calls=30, tokens=300)  # API keys
    if today.day > 1:
        stat(tenant_alpha, user.pk, calls=2, tokens=20, day=L.period_start(today))
    stat(tenant_alpha, user.pk, calls=900, tokens=9000, day=L.period_start(today) - dt.timedelta(days=1))  # last month
    own = 9 if today.day > 1 else 7

    page = user_client.get("/usage/").content.decode()
    assert text_of(page, "total-calls") == str(own)
    assert text_of(page, "total-tokens") == str(own * 10)
    assert other.email not in page
    for total in ("536", "537", "539"):  # the tenant's totals
        assert f">{total}<" not in page
    assert text_of(viewer_client.get("/usage/").content.decode(), "total-calls") == "0"

    admin = logged_in(tenant_alpha, Role.ADMIN).get("/usage/").content.decode()
    assert text_of(admin, "total-calls") == str(own + 530)
    members = admin[admin.index('data-testid="per-user"') :]
    for who in (user.email, other.email, "API keys"):
        assert who in members
    assert viewer.email not in members  # no calls, no row
    assert members.index(other.email) < members.index(user.email)  # most calls first


def test_quota_bars_change_colour_near_the_limit(tenant_alpha: TenantFixture) -> None:
    client = logged_in(tenant_alpha, Role.ADMIN)
    assert L.limits_for(tenant_alpha.tenant).api_calls == 100_000  # pro

    def page_with_calls(calls: int) -> str:
        with schema_context(tenant_alpha.tenant.schema_name):
            UsageStat.objects.update_or_create(user=None, date=L.today(), defaults={"api_calls": calls})
        forget_live_counters(tenant_alpha)
        return client.get("/usage/").content.decode()

    def level(page: str) -> str:
        match = re.search(r'data-testid="quota-api_calls" data-level="(\w+)"', page)
        assert match
        return match.group(1)

    def level_in_words(page: str) -> str:
        """What the bar's colour says, in words: a colour-blind admin must not depend on amber and red."""
        row = re.search(r'data-testid="quota-api_calls".*?</tr>', page, re.S)
        assert row
        words = re.search(r'data-testid="quota-level">([^<]*)<', row.group(0))
        return words.group(1) if words else ""

    assert level(page_with_calls(0)) == "ok"
    page = page_with_calls(79_999)
    assert level(page) == "ok"
    assert level_in_words(page) == ""
    assert level(page_with_calls(80_000)) == "warn"
    page = page_with_calls(99_999)
    assert level(page) == "warn"
    assert level_in_words(page) == "Near the limit"
    page = page_with_calls(100_000)
    assert level(page) == "over"
    assert level_in_words(page) == "Limit reached"
    assert "100,000 of 100,000 (100%)" in page
    assert 'class="quota-bar over" max="100000" value="100000"' in page
    page = page_with_calls(130_000)
    assert 'class="quota-bar over" max="100000" value="100000"' in page
    assert text_of(page, "overage") == "¥300.00"  # 30,000 calls past the quota at ¥10 per 1,000


@pytest.mark.parametrize(
    ("size", "shown"),
    [(None, ""), (0, "0 MB"), (500, "< 0.1 MB"), (L.MB * 3 // 2, "1.5 MB"), (L.MB * 99, "99.0 MB"),
     (L.MB * 2048, "2,048 MB"), (L.MB * 10_000, "10,000 MB"), (L.MB * 10_000 - 1, "10,000 MB")],
)  # fmt: skip
def test_storage_is_shown_in_the_plans_unit(size: int | None, shown: str) -> None:
    """The plans state MB: 10,000 MB is not shown as 9.8 GB next to a price list that says 10,000 MB."""
    from apps.usage.templatetags.usage_units import megabytes

    assert megabytes(size) == shown


def test_the_usage_page_shows_storage_as_the_plan_states_it(tenant_alpha: TenantFixture) -> None:
    with schema_context(tenant_alpha.tenant.schema_name):
        UsageStat.objects.create(user=None, date=L.today(), storage_bytes=L.MB * 1234)
    redis_client().delete(storage_key(tenant_alpha.tenant.schema_name))
    page = logged_in(tenant_alpha, Role.ADMIN).get("/usage/").content.decode()
    assert text_of(page, "storage-used") == "1,234 MB"
    assert "1,234 MB of 10,000 MB (12%)" in page  # the pro plan's 10,000 MB


def test_the_usage_page_says_what_storage_past_the_quota_costs(tenant_alpha: TenantFixture) -> None:
    """Pro goes on past its storage quota at ¥2 per GB-month (DESIGN.md): the overage card says so next to calls."""
    page = logged_in(tenant_alpha, Role.ADMIN).get("/usage/").content.decode()
    card = page[page.index('data-testid="spending-cap-card"') : page.index('data-testid="member-limit-card"')]
    assert "Calls beyond the plan's quota cost ¥10.00 per 1,000" in card
    assert "Storage beyond the plan's quota costs ¥2.00 per GB-month." in card


def test_unlimited_quotas_say_so() -> None:
    result = tenant_provision(name="Big Water", slug="big-water", plan="enterprise",
                              admin_email="admin@big-water.example.com", admin_password=ADMIN_PASSWORD,
                              actor=TEST_ACTOR)  # fmt: skip
    client = Client(HTTP_HOST=result.tenant.primary_hostname, HTTP_ACCEPT_LANGUAGE="en")
    client.post("/login/", {"username": "admin@big-water.example.com", "password": ADMIN_PASSWORD})
    page = client.get("/usage/").content.decode()
    assert page.count('data-level="unlimited"') == 4
    assert "quota-bar" not in page
    assert "no overage charges" in page
    assert 'data-testid="spending-cap-form"' not in page


def test_a_member_of_beta_sees_nothing_of_alpha_and_alpha_nothing_of_beta(
    tenant_alpha: TenantFixture, tenant_beta: TenantFixture
) -> None:
    stat(tenant_beta, None, calls=4242, tokens=919_191)
    alert(tenant_beta, "api_calls", 90)
    page = logged_in(tenant_alpha, Role.ADMIN).get("/usage/").content.decode()
    assert text_of(page, "total-calls") == "0"
    for number in ("4,242", "4242", "919,191", "919191"):
        assert number not in page
    assert 'data-testid="quota-banner"' not in page

    # A beta session means nothing on alpha's host, and beta's admin cannot log in there.
    beta = logged_in(tenant_beta, Role.ADMIN)
    assert text_of(beta.get("/usage/").content.decode(), "total-calls") == "4,242"
    beta.defaults["HTTP_HOST"] = tenant_alpha.host
    response = beta.get("/usage/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
    refused = tenant_alpha.client().post("/login/", {"username": tenant_beta.admin_email, "password": ADMIN_PASSWORD})
    assert refused.status_code == 400


# --- The spending cap ----------------------------------------------------------------------


class TestSpendingCap:
    def test_an_admin_sets_and_removes_it(self, tenant_alpha: TenantFixture) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        assert cap_of(tenant_alpha) is None
        assert text_of(client.get("/usage/").content.decode(), "spending-cap") == "No cap"
        response = client.post("/usage/spending-cap/", {"cap_yuan": "12.34"})
        assert response.status_code == 302
        assert response["Location"] == "/usage/"
        assert cap_of(tenant_alpha) == 1234
        events = cap_events(tenant_alpha)
        assert len(events) == 1
        assert events[0].metadata == {"from_fen": None, "to_fen": 1234}
        assert events[0].actor_user_id is not None
        page = client.get("/usage/").content.decode()
        assert text_of(page, "spending-cap") == "¥12.34 a month"
        assert 'value="12.34"' in page  # the form starts from the current cap
        assert "The spending cap is now ¥12.34 a month." in page

        said = client.post("/usage/spending-cap/", {"cap_yuan": "1234567.5"}, follow=True).content.decode()
        assert "The spending cap is now ¥1,234,567.50 a month." in said  # grouped, as the page shows amounts
        assert text_of(said, "spending-cap") == "¥1,234,567.50 a month"
        assert client.post("/usage/spending-cap/", {"cap_yuan": "0"}).status_code == 302
        assert cap_of(tenant_alpha) == 0
        assert client.post("/usage/spending-cap/", {"cap_yuan": "", "action": "remove"}).status_code == 302
        assert cap_of(tenant_alpha) is None
        assert [e.metadata["to_fen"] for e in cap_events(tenant_alpha)] == [1234, 123456750, 0, None]

    @pytest.mark.parametrize(
        ("value", "message"),
        [("-5", "greater than or equal to 0"), ("abc", "Enter a number"), ("1.234", "at most two decimals"),
         ("", "This field is required"), ("NaN", "Enter a number"), ("Infinity", "Enter a number"),
         ("1e99", "at most ¥100,000,000.00 a month"), ("100000001", "at most ¥100,000,000.00 a month"),
         ("99999999999999999999999", "at most ¥100,000,000.00 a month")],
    )  # fmt: skip
    def test_garbage_is_a_form_error_and_changes_nothing(
        self, tenant_alpha: TenantFixture, value: str, message: str
    ) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        response = client.post("/usage/spending-cap/", {"cap_yuan": value})
        assert response.status_code == 400
        page = response.content.decode()
        assert message in page
        assert page.count('class="errorlist') == 1  # one message, not one from each check
        assert 'data-testid="spending-cap-form"' in page
        assert cap_of(tenant_alpha) is None
        assert cap_events(tenant_alpha) == []

    @pytest.mark.parametrize("role", [Role.USER, Role.VIEWER])
    def test_other_roles_get_403(self, tenant_alpha: TenantFixture, role: str) -> None:
        client = logged_in(tenant_alpha, role)
        response = client.post("/usage/spending-cap/", {"cap_yuan": "99"})
        assert response.status_code == 403
        assert "manage_billing" in response.content.decode()
        response = client.post("/usage/spending-cap/", {"action": "remove"})
        assert response.status_code == 403
        assert cap_of(tenant_alpha) is None
        assert cap_events(tenant_alpha) == []

    def test_a_get_goes_to_the_usage_page(self, tenant_alpha: TenantFixture) -> None:
        response = logged_in(tenant_alpha, Role.ADMIN).get("/usage/spending-cap/")
        assert (response.status_code, response["Location"]) == (302, "/usage/")
        assert cap_of(tenant_alpha) is None


def member_limit_of(tenant: TenantFixture) -> int | None:
    return Tenant.objects.get(pk=tenant.tenant.pk).member_daily_calls


class TestMemberDailyCalls:
    def test_one_call_a_day_is_one_call(self, tenant_alpha: TenantFixture) -> None:
        """The page said "Each member may now make 1 AI calls a day."."""
        client = logged_in(tenant_alpha, Role.ADMIN)
        assert client.post("/usage/member-daily-calls/", {"calls": "1"}).status_code == 302
        assert "Each member may now make 1 AI call a day." in client.get("/usage/").content.decode()

    @pytest.mark.parametrize(
        ("now", "when"),
        [
            (dt.datetime(2026, 12, 31, 12, tzinfo=dt.UTC), "08:00 UTC+8 tomorrow (2027-01-01)"),
            (dt.datetime(2026, 12, 31, 20, tzinfo=dt.UTC), "08:00 UTC+8 today (2027-01-01)"),
        ],
    )
    def test_the_page_says_which_day_the_limit_starts_again_as_the_402_does(
        self, tenant_alpha: TenantFixture, now: dt.datetime, when: str
    ) -> None:
        """The page said "again from 08:00 UTC+8": at 04:00 in China that read as tomorrow's, which it is not."""
        set_limits(Tenant.objects.get(pk=tenant_alpha.tenant.pk), member_daily_calls=5)
        with time_machine.travel(now, tick=False):  # logged in then: a session of today would have expired
            admin = logged_in(tenant_alpha, Role.ADMIN)
            member, _user = member_client(tenant_alpha, Role.USER)
            said = text_of(admin.get("/usage/").content.decode(), "member-limit")
            own = member.get("/usage/").content.decode()
        assert said == f"5 AI calls a member a day, again from {when}", said
        assert f"counted again from {when}." in own

    def test_an_admin_sets_and_removes_it_and_a_member_sees_their_day(self, tenant_alpha: TenantFixture) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        assert text_of(client.get("/usage/").content.decode(), "member-limit") == "No limit"
        response = client.post("/usage/member-daily-calls/", {"calls": "1500"})
        assert response.status_code == 302
        assert response["Location"] == "/usage/"
        assert member_limit_of(tenant_alpha) == 1500
        page = client.get("/usage/").content.decode()
        assert text_of(page, "member-limit").startswith("1,500 AI calls a member a day, again from 08:00 UTC+8 ")
        assert 'value="1500"' in page  # the form starts from the current limit
        assert "Each member may now make 1,500 AI calls a day." in page  # grouped, as the limit above
        with schema_context(tenant_alpha.tenant.schema_name):
            assert AuditEvent.objects.filter(action="usage.member_daily_calls_set").count() == 1

        member, user = member_client(tenant_alpha, Role.USER)
        stat(tenant_alpha, user.pk, 12, 300)
        if L.today().day > 1:  # yesterday's calls do not count
            stat(tenant_alpha, user.pk, 40, 900, L.today() - dt.timedelta(days=1))
        own = member.get("/usage/").content.decode()
        today = own.split('data-testid="member-today"')[1].split("</div>\n  </div>")[0]
        assert "12 / 1,500" in today  # today's calls only
        assert 'data-testid="member-limit-form"' not in own
        viewer, _viewer = member_client(tenant_alpha, Role.VIEWER)
        assert 'data-testid="member-today"' not in viewer.get("/usage/").content.decode()  # viewers make no AI calls
        # The admins see each member's calls today next to the month's, against the limit.
        members = client.get("/usage/").content.decode().split('data-testid="per-user"')[1].split("</table>")[0]
        assert "Today (of 1,500)" in members
        row = members.split(user.email)[1].split("</tr>")[0]
        assert '<td data-testid="member-today-calls">12</td>' in row

        assert client.post("/usage/member-daily-calls/", {"action": "remove"}).status_code == 302
        assert member_limit_of(tenant_alpha) is None
        assert 'data-testid="member-today-calls"' not in client.get("/usage/").content.decode()  # no limit, no column
        assert 'data-testid="member-today"' not in member.get("/usage/").content.decode()

    @pytest.mark.parametrize(
        ("value", "message"),
        [("0", "greater than or equal to 1"), ("-5", "greater than or equal to 1"), ("abc", "Enter a whole number"),
         ("", "This field is required"), ("1.5", "Enter a whole number"), ("1000001", "at most 1,000,000 calls a day")],
    )  # fmt: skip
    def test_garbage_is_a_form_error_and_changes_nothing(
        self, tenant_alpha: TenantFixture, value: str, message: str
    ) -> None:
        client = logged_in(tenant_alpha, Role.ADMIN)
        response = client.post("/usage/member-daily-calls/", {"calls": value})
        assert response.status_code == 400
        page = response.content.decode()
        assert message in page
        assert 'data-testid="member-limit-form"' in page
        assert member_limit_of(tenant_alpha) is None

    @pytest.mark.parametrize("role", [Role.USER, Role.VIEWER])
    def test_other_roles_get_403(self, tenant_alpha: TenantFixture, role: str) -> None:
        client = logged_in(tenant_alpha, role)
        assert client.post("/usage/member-daily-calls/", {"calls": "5"}).status_code == 403
        assert client.post("/usage/member-daily-calls/", {"action": "remove"}).status_code == 403
        assert member_limit_of(tenant_alpha) is None


# --- The quota banner ----------------------------------------------------------------------


def banner(page: str) -> str:
    match = re.search(r'<div class="quota-banner" data-testid="quota-banner".*?\n      </div>', page, re.S)
    return match.group(0) if match else ""


class TestQuotaBanner:
    def test_it_appears_once_a_threshold_was_crossed_this_month(self, tenant_alpha: TenantFixture) -> None:
        admin = logged_in(tenant_alpha, Role.ADMIN)
        user = logged_in(tenant_alpha, Role.USER)
        alert(tenant_alpha, "api_calls", 90, period=L.period_start(L.period_start(L.today()) - dt.timedelta(days=1)))
        for client in (admin, user):
            assert banner(client.get("/dashboard/").content.decode()) == ""

        alert(tenant_alpha, "api_calls", 80)
        alert(tenant_alpha, "storage", 80)
        alert(tenant_alpha, "storage", 90)
        for path in ("/dashboard/", "/chat/", "/profile/", "/usage/"):
            text = banner(admin.get(path).content.decode())
            assert "API calls: 80% of the plan's quota is used this month." in text
            assert "Storage: 90% of the plan's quota is used" in text
            assert "Storage: 80%" not in text  # only the highest threshold of each quota
            assert 'class="notice warning"' in text
            assert "notice error" not in text
            assert 'href="/usage/"' in text
        text = banner(user.get("/dashboard/").content.decode())
        assert "API calls: 80%" in text
        assert 'href="/usage/"' not in text  # no view_stats, no link

    def test_on_a_paid_plan_100_percent_is_a_warning_about_overage(self, tenant_alpha: TenantFixture) -> None:
        alert(tenant_alpha, "api_calls", 100)
        text = banner(logged_in(tenant_alpha, Role.ADMIN).get("/dashboard/").content.decode())
        assert "Further calls are billed as overage." in text
        assert 'class="notice warning"' in text

    def test_on_a_paid_plan_full_storage_is_a_warning_about_overage(self, tenant_alpha: TenantFixture) -> None:
        alert(tenant_alpha, "storage", 100)
        text = banner(logged_in(tenant_alpha, Role.ADMIN).get("/dashboard/").content.decode())
        assert "Storage: 100% of the plan's quota is used. Further storage is billed as overage." in text
        assert 'class="notice warning" data-quota="storage"' in text

    def test_several_quotas_show_the_most_pressing_and_fold_the_others(self, tenant_alpha: TenantFixture) -> None:
        """Four quotas crossed at once pushed the chat's input out of a laptop's window: one shows, three fold."""
        alert(tenant_alpha, "storage", 80)
        alert(tenant_alpha, "users", 90)
        alert(tenant_alpha, "api_calls", 100)
        text = banner(logged_in(tenant_alpha, Role.ADMIN).get("/chat/").content.decode())
        shown, folded = text.split('<details class="quota-more" data-testid="quota-more">')
        assert 'data-quota="api_calls"' in shown  # 100 % before 90 % before 80 %
        assert "2 more quota alerts" in folded
        assert folded.index('data-quota="users"') < folded.index('data-quota="storage"')
        assert "</details>" in folded

    def test_a_full_member_count_folds_under_the_calls_running_out(self, tenant_alpha: TenantFixture) -> None:
        """A free workspace sits at its 1 of 1 members (or MCP services) from its first day: that 100 % stops
        nothing, and it showed above the API calls' 90 %, which folded away the warning that the chat would soon
        stop."""
        alert(tenant_alpha, "users", 100)
        alert(tenant_alpha, "api_calls", 90)
        text = banner(logged_in(tenant_alpha, Role.ADMIN).get("/chat/").content.decode())
        shown, folded = text.split('<details class="quota-more" data-testid="quota-more">')
        assert 'data-quota="api_calls"' in shown
        assert 'data-quota="users"' in folded

    def test_one_quota_is_not_folded(self, tenant_alpha: TenantFixture) -> None:
        alert(tenant_alpha, "storage", 80)
        text = banner(logged_in(tenant_alpha, Role.ADMIN).get("/chat/").content.decode())
        assert 'data-quota="storage"' in text
        assert "quota-more" not in text

    def test_a_reached_spending_cap_says_calls_stop(self, tenant_alpha: TenantFixture) -> None:
        """Pro bills 1 fen a call past the quota: with a cap of 3 fen, calls stop at 1,003 of 1,000."""
        alert(tenant_alpha, "api_calls", 100)  # 1,000 of 1,000
        set_limits(tenant_alpha.tenant, spending_cap_fen=3)
        admin = logged_in(tenant_alpha, Role.ADMIN)
        assert "Further calls are billed as overage." in banner(admin.get("/dashboard/").content.decode())
        redis_client().hset(month_key(tenant_alpha.tenant.schema_name, L.today()), "calls", 1003)
        text = banner(admin.get("/dashboard/").content.decode())
        resets = zoned(L.resets_at(L.today()))
        assert ("API calls: this month's overage has reached the spending cap of ¥0.03. AI calls are stopped until an "
                f"admin raises the cap or the quota resets on {resets}.") in text  # fmt: skip
        assert 'class="notice error" data-quota="api_calls"' in text
        assert "billed as overage" not in text

    @pytest.mark.parametrize(("language", "cap"), [("en", "¥1,000,000.50"), ("zh-hans", "¥1,000,000.50")])
    def test_the_banners_cap_is_grouped_by_three_as_on_the_usage_page(
        self, tenant_alpha: TenantFixture, language: str, cap: str
    ) -> None:
        """The banner said "¥1000000.50" where the usage page says ¥1,000,000.50."""
        alert(tenant_alpha, "api_calls", 100)
        set_limits(tenant_alpha.tenant, spending_cap_fen=100_000_050)  # pro: 1 fen a call
        redis_client().hset(month_key(tenant_alpha.tenant.schema_name, L.today()), "calls", 1000 + 100_000_050)
        admin = logged_in(tenant_alpha, Role.ADMIN)
        admin.cookies[settings.LANGUAGE_COOKIE_NAME] = language
        text = banner(admin.get("/dashboard/", HTTP_ACCEPT_LANGUAGE=language).content.decode())
        assert cap in text
        assert ("支出上限" in text) == (language == "zh-hans")
        assert "1000000" not in text

    def test_on_the_free_plan_100_percent_says_calls_stop(self) -> None:
        result = tenant_provision(name="Tiny Water", slug="tiny-water", plan="free",
                                  admin_email="admin@tiny-water.example.com", admin_password=ADMIN_PASSWORD,
                                  actor=TEST_ACTOR)  # fmt: skip
        alert(result.tenant, "api_calls", 100)
        alert(result.tenant, "storage", 90)
        client = Client(HTTP_HOST=result.tenant.primary_hostname, HTTP_ACCEPT_LANGUAGE="en")
        client.post("/login/", {"username": "admin@tiny-water.example.com", "password": ADMIN_PASSWORD})
        text = banner(client.get("/dashboard/").content.decode())
        resets = zoned(L.resets_at(L.today()))
        stopped = (
            f"API calls: 100% of the plan's quota is used. AI calls are stopped until the quota resets on {resets}."
        )
        assert stopped in text
        assert 'class="notice error" data-quota="api_calls"' in text
        assert 'class="notice warning" data-quota="storage"' in text

    def test_the_reset_is_the_moment_in_the_pages_zone_not_a_bare_date(self, tenant_alpha: TenantFixture) -> None:
        """Calls stop at 20:00 UTC on 31 December, 04:00 on 1 January in China: "until the quota resets on
        2027-01-01" was already that day there, and calls stayed stopped until 08:00."""
        with time_machine.travel(dt.datetime(2026, 12, 31, 20, 0, tzinfo=dt.UTC), tick=False):
            alert(tenant_alpha, "api_calls", 100)
            set_limits(Tenant.objects.get(pk=tenant_alpha.tenant.pk), plan="free")  # not the session's row
            page = logged_in(tenant_alpha, Role.ADMIN).get("/usage/").content.decode()
            with schema_context(tenant_alpha.tenant.schema_name):
                (hundred,) = QuotaAlert.objects.filter(threshold=100)
                send_quota_alert_email.apply(args=[hundred.pk, "en"]).get()
        assert "AI calls are stopped until the quota resets on 2027-01-01 08:00 UTC+8." in banner(page)
        assert "resets on 2027-01-01 08:00 UTC+8" in page.split('data-testid="quota-api_calls"')[1]
        (message,) = mail.outbox
        assert "AI calls are stopped until the quota resets on 2027-01-01 08:00 UTC+8." in message.body

    def test_it_goes_once_the_use_falls_below_the_threshold(
        self, tenant_alpha: TenantFixture, demo_mcp_url: str
    ) -> None:
        """Members and MCP services can be removed: a full quota's banner stays only while it is full."""
        from apps.core.actors import Actor
        from apps.mcp.services import mcp_service_create, mcp_service_delete

        set_limits(tenant_alpha.tenant, max_mcp_services_override=2)
        admin = logged_in(tenant_alpha, Role.ADMIN)
        with schema_context(tenant_alpha.tenant.schema_name):
            actor = Actor(user=admin_of(tenant_alpha))
            services = [mcp_service_create(actor=actor, name=f"S{n}", url=demo_mcp_url) for n in range(2)]
        text = banner(admin.get("/dashboard/").content.decode())  # the alerts the two creations raised
        assert ("MCP services: 100% of the plan's quota is used. No more can be added until some are removed or "
                "the plan changes.") in text  # fmt: skip
        assert "this month" not in text  # the limit does not reset
        with schema_context(tenant_alpha.tenant.schema_name):
            mcp_service_delete(actor=actor, service=services[0])
        assert banner(admin.get("/dashboard/").content.decode()) == ""  # 1 of 2: below 80 %
        with schema_context(tenant_alpha.tenant.schema_name):
            assert QuotaAlert.objects.filter(quota="mcp_services").count() == 3  # fired all the same, once each

    def test_it_goes_once_the_limit_rises_above_the_use(self) -> None:
        """A free workspace stopped at its calls moves to a paid plan: no longer stopped, no banner that says so."""
        result = tenant_provision(name="Tiny Water", slug="tiny-water", plan="free",
                                  admin_email="admin@tiny-water.example.com", admin_password=ADMIN_PASSWORD,
                                  actor=TEST_ACTOR)  # fmt: skip
        alert(result.tenant, "api_calls", 100)
        client = Client(HTTP_HOST=result.tenant.primary_hostname, HTTP_ACCEPT_LANGUAGE="en")
        client.post("/login/", {"username": "admin@tiny-water.example.com", "password": ADMIN_PASSWORD})
        assert "AI calls are stopped" in banner(client.get("/dashboard/").content.decode())
        set_limits(result.tenant, plan="pro", api_calls_per_month_override=1250)  # 1,000 calls used: 80 %
        text = banner(client.get("/dashboard/").content.decode())
        assert "API calls: 80% of the plan's quota is used this month." not in text  # 80 % was never recorded
        assert text == ""
        set_limits(result.tenant, api_calls_per_month_override=None)  # pro's own 50,000
        assert banner(client.get("/dashboard/").content.decode()) == ""

    def test_level_quotas_do_not_say_this_month(self, tenant_alpha: TenantFixture) -> None:
        alert(tenant_alpha, "storage", 90)
        alert(tenant_alpha, "users", 100)
        text = banner(logged_in(tenant_alpha, Role.ADMIN).get("/dashboard/").content.decode())
        assert "Storage: 90% of the plan's quota is used.\n" in text
        assert "Users: 100% of the plan's quota is used. No more can be added" in text
        assert "this month" not in text

    def test_a_level_quotas_alert_of_an_earlier_month_stands_while_the_level_does(
        self, tenant_alpha: TenantFixture
    ) -> None:
        """Members and storage do not start again on the 1st: a workspace still at 5 of 5 members keeps its banner."""
        last_month = L.period_start(L.period_start(L.today()) - dt.timedelta(days=1))
        alert(tenant_alpha, "users", 100, period=last_month)
        alert(tenant_alpha, "storage", 90, period=last_month)
        alert(tenant_alpha, "api_calls", 100, period=last_month)
        stand_at(tenant_alpha.tenant, "users", 100)
        stand_at(tenant_alpha.tenant, "storage", 90)
        stand_at(tenant_alpha.tenant, "api_calls", 100)
        admin = logged_in(tenant_alpha, Role.ADMIN)
        text = banner(admin.get("/dashboard/").content.decode())
        assert "Users: 100% of the plan's quota is used. No more can be added" in text
        assert "Storage: 90% of the plan's quota is used." in text
        assert "API calls" not in text  # calls start again each month: last month's alert is not this month's

        set_limits(tenant_alpha.tenant, max_users_override=user_count_for_quota() + 10)  # the level fell below
        text = banner(admin.get("/dashboard/").content.decode())
        assert "Users" not in text
        assert "Storage: 90%" in text

    def test_a_limit_of_0_is_full_not_unlimited(self, tenant_alpha: TenantFixture) -> None:
        set_limits(tenant_alpha.tenant, max_users_override=0)
        with schema_context(tenant_alpha.tenant.schema_name):
            QuotaAlert.objects.create(quota="users", period=L.period_start(L.today()), threshold=100, limit=0,
                                      used=user_count_for_quota())  # fmt: skip
        admin = logged_in(tenant_alpha, Role.ADMIN)
        assert "Users: 100% of the plan's quota is used." in banner(admin.get("/dashboard/").content.decode())
        users = next(q for q in admin.get("/api/quota").json()["quotas"] if q["quota"] == "users")
        assert (users["limit"], users["remaining"], users["percent"]) == (0, 0, 100.0)

    def test_not_on_the_public_host_nor_before_login(self, tenant_alpha: TenantFixture, public_client: Client) -> None:
        alert(tenant_alpha, "api_calls", 100)
        assert 'data-testid="quota-banner"' not in public_client.get("/").content.decode()
        assert 'data-testid="quota-banner"' not in tenant_alpha.client().get("/login/").content.decode()

    def test_it_costs_one_query(self, tenant_alpha: TenantFixture) -> None:
        client = logged_in(tenant_alpha, Role.USER)
        alert(tenant_alpha, "api_calls", 80)
        alert(tenant_alpha, "users", 90)
        with CaptureQueriesContext(db_connection) as queries:
            page = client.get("/profile/").content.decode()
        assert "Users: 90%" in banner(page)
        assert len([q for q in queries if "usage_quotaalert" in q["sql"]]) == 1
        with CaptureQueriesContext(db_connection) as queries:
            client.get("/api/auth/me")
        assert not [q for q in queries if "usage_quotaalert" in q["sql"]]  # no page, no query


# --- Both languages ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "words"),
    [("en", ["Usage", "API calls per day", "Tokens per day", "Quotas", "Usage by member", "Spending cap",
             "API calls: 80% of the plan"]),
     ("zh-hans", ["用量", "每日 API 调用", "每日 Token 数", "配额", "成员用量", "支出上限",
                  "API 调用：本月已用套餐配额的 80%"])],
)  # fmt: skip
def test_the_page_and_banner_speak_both_languages(tenant_alpha: TenantFixture, language: str, words: list[str]) -> None:
    alert(tenant_alpha, "api_calls", 80)
    client = logged_in(tenant_alpha, Role.ADMIN)
    page = client.get("/usage/", HTTP_ACCEPT_LANGUAGE=language).content.decode()
    for word in words:
        assert word in page
    own = logged_in(tenant_alpha, Role.USER).get("/usage/", HTTP_ACCEPT_LANGUAGE=language).content.decode()
    assert ("仅显示您自己的调用" if language == "zh-hans" else "Your own calls only") in own


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_large_numbers_are_grouped_by_three_in_both_languages(tenant_alpha: TenantFixture, language: str) -> None:
    """Django's zh-hans formats group no digits (12345678); ours use a comma, as Chinese statements do."""
    _client, user = member_client(tenant_alpha, Role.USER)
    stat(tenant_alpha, user.pk, calls=1234, tokens=12345678)
    page = logged_in(tenant_alpha, Role.ADMIN).get("/usage/", HTTP_ACCEPT_LANGUAGE=language).content.decode()
    members = page[page.index('data-testid="per-user"') :]
    assert "12,345,678" in members[: members.index("</table>")]
    assert "1,234" in members[: members.index("</table>")]


# --- Earlier months -----------------------------------------------------------------------


class TestEarlierMonths:
    def months(self) -> tuple[dt.date, dt.date, dt.date]:
        this = L.period_start(L.today())
        last = L.period_start(this - dt.timedelta(days=1))
        return L.period_start(last - dt.timedelta(days=1)), last, this

    def created_in(self, tenant: TenantFixture, month: dt.date) -> None:
        row = Tenant.objects.get(pk=tenant.tenant.pk)
        row.created_at = dt.datetime(month.year, month.month, 15, tzinfo=dt.UTC)
        row.save()

    def test_an_earlier_month_shows_its_usage_and_links_both_ways(self, tenant_alpha: TenantFixture) -> None:
        before, last, _this = self.months()
        self.created_in(tenant_alpha, before)
        user_client, user = member_client(tenant_alpha, Role.USER)
        other = make_member(tenant_alpha, Role.USER)
        stat(tenant_alpha, user.pk, calls=900, tokens=9000, day=L.period_end(last))
        stat(tenant_alpha, other.pk, calls=40, tokens=400, day=last)
        stat(tenant_alpha, user.pk, calls=5, tokens=50)  # this month
        admin = logged_in(tenant_alpha, Role.ADMIN)

        response = admin.get("/usage/", {"month": f"{last:%Y-%m}"})
        assert response.status_code == 200
        page = response.content.decode()
        assert text_of(page, "total-calls") == "940"
        assert text_of(page, "total-tokens") == "9,400"
        members = page[page.index('data-testid="per-user"') :]
        assert members.index(user.email) < members.index(other.email)
        assert f"from {last:%Y-%m-%d} to {L.period_end(last):%Y-%m-%d} (UTC)" in page
        assert response.context["chart"]["days"][-1] == L.period_end(last).isoformat()  # the whole month
        assert f'href="?month={before:%Y-%m}" data-testid="previous-month"' in page
        assert 'href="?" data-testid="next-month"' in page  # back to this month
        for now_only in ("quotas", "spending-cap-form", "storage-used", "overage"):  # they are this month's
            assert f'data-testid="{now_only}"' not in page
        assert 'data-testid="quotas-elsewhere"' in page

        current = admin.get("/usage/").content.decode()
        assert text_of(current, "total-calls") == "5"
        assert f'href="?month={last:%Y-%m}" data-testid="previous-month"' in current
        assert 'data-testid="next-month"' not in current
        assert 'data-testid="quotas"' in current
        first = admin.get("/usage/", {"month": f"{before:%Y-%m}"}).content.decode()
        assert 'data-testid="previous-month"' not in first  # the workspace's first month
        assert text_of(first, "total-calls") == "0"

        own = user_client.get("/usage/", {"month": f"{last:%Y-%m}"}).content.decode()
        assert text_of(own, "total-calls") == "900"  # members without view_stats: their own, any month
        assert other.email not in own

    @pytest.mark.parametrize("month", ["2026-13", "2026-00", "26-11", "2026-1", "yesterday", "1999-12", "next"])
    def test_a_bad_or_future_month_is_a_400_showing_this_month(self, tenant_alpha: TenantFixture, month: str) -> None:
        this = L.period_start(L.today())
        if month == "next":
            month = f"{L.period_end(this) + dt.timedelta(days=1):%Y-%m}"
        stat(tenant_alpha, None, calls=3, tokens=30)
        response = logged_in(tenant_alpha, Role.ADMIN).get("/usage/", {"month": month})
        assert response.status_code == 400
        page = response.content.decode()
        expected = "That month has not started yet." if month.startswith("20") and month[5:] not in ("00", "13") \
            and len(month) == 7 else "Give the month as YYYY-MM"  # fmt: skip
        assert expected in text_of(page, "month-error")
        assert response.context["start"] == this
        assert text_of(page, "total-calls") == "3"


# --- The dashboard ----------------------------------------------------------------------------


def test_admins_see_each_api_keys_calls_others_do_not(tenant_alpha: TenantFixture, tenant_beta: TenantFixture) -> None:
    with schema_context(tenant_beta.tenant.schema_name):
        theirs, _secret = api_key_create(actor=TEST_ACTOR, name="Beta integration", role=Role.USER)
        ApiKeyUsage.objects.create(api_key=theirs, date=L.today(), api_calls=50, tokens_used=500)
    admin = logged_in(tenant_alpha, Role.ADMIN)
    assert 'data-testid="per-key-empty"' in admin.get("/usage/").content.decode()
    with schema_context(tenant_alpha.tenant.schema_name):
        key, _secret = api_key_create(actor=TEST_ACTOR, name="Nightly <sync>", role=Role.USER)
        ApiKeyUsage.objects.create(api_key=key, date=L.today(), api_calls=1234, tokens_used=56789)
    page = admin.get("/usage/").content.decode()
    table = page[page.index('data-testid="per-key"') :]
    table = table[: table.index("</table>")]
    assert "Nightly &lt;sync&gt;" in table
    assert key.prefix in table
    assert "1,234" in table
    assert "56,789" in table
    assert "Beta integration" not in page
    user_client, _user = member_client(tenant_alpha, Role.USER)
    assert 'data-testid="usage-keys"' not in user_client.get("/usage/").content.decode()


def test_the_dashboard_shows_the_limits_that_apply_and_admins_what_is_used(tenant_alpha: TenantFixture) -> None:
    from tests.usage.conftest import set_limits

    set_limits(Tenant.objects.get(pk=tenant_alpha.tenant.pk), api_calls_per_month_override=250_000,
               max_users_override=40, storage_mb_override=2048)  # fmt: skip
    stat(tenant_alpha, None, calls=1234, tokens=10)
    forget_live_counters(tenant_alpha)
    admin = logged_in(tenant_alpha, Role.ADMIN).get("/dashboard/").content.decode()
    calls = admin[admin.index('data-testid="limit-api_calls"') :]
    assert "<td>250,000</td>" in calls.split("</tr>")[0]  # the override, not the pro plan's 100,000
    assert "<td>1,234</td>" in calls.split("</tr>")[0]  # used this month
    assert "<td>40</td>" in admin[admin.index('data-testid="limit-users"') :].split("</tr>")[0]
    assert "<td>2,048 MB</td>" in admin[admin.index('data-testid="limit-storage"') :].split("</tr>")[0]
    assert "/usage/" in admin

    user, _member = member_client(tenant_alpha, Role.USER)
    page = user.get("/dashboard/").content.decode()
    row = page[page.index('data-testid="limit-api_calls"') :].split("</tr>")[0]
    assert "<td>250,000</td>" in row
    assert "1,234" not in page  # the workspace's usage needs view_stats
    assert 'data-testid="limit-member-daily-calls"' not in page  # none set
    set_limits(Tenant.objects.get(pk=tenant_alpha.tenant.pk), member_daily_calls=1500)
    page = user.get("/dashboard/").content.decode()
    assert "<td>1,500</td>" in page[page.index('data-testid="limit-member-daily-calls"') :].split("</tr>")[0]


# --- CSV downloads ------------------------------------------------------------------------------


class TestCsvExport:
    def rows(self, response: Any) -> list[list[str]]:
        import csv
        import io

        assert response["Content-Type"] == "text/csv; charset=utf-8"
        assert response.content.startswith(b"\xef\xbb\xbf")  # the BOM: Excel on Chinese Windows reads UTF-8 then
        return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))

    def test_a_month_by_day_and_by_member(self, tenant_alpha: TenantFixture) -> None:
        this = L.period_start(L.today())
        last = L.period_start(this - dt.timedelta(days=1))
        user_client, user = member_client(tenant_alpha, Role.USER)
        formula = make_member(tenant_alpha, Role.USER, email="=cmd@example.com")  # a spreadsheet formula
        stat(tenant_alpha, user.pk, calls=7, tokens=70, day=last)
        stat(tenant_alpha, formula.pk, calls=2, tokens=20, day=last)
        stat(tenant_alpha, None, calls=3, tokens=30, day=L.period_end(last))  # API keys
        stat(tenant_alpha, user.pk, calls=1, tokens=10)  # this month
        stat(tenant_alpha, 987654, calls=1, tokens=5, day=last + dt.timedelta(days=1))  # a member deleted since
        admin = logged_in(tenant_alpha, Role.ADMIN)

        by_day = admin.get("/usage/export.csv", {"month": f"{last:%Y-%m}", "by": "day"})
        assert by_day["Content-Disposition"] == f'attachment; filename="usage-{last:%Y-%m}-by-day.csv"'
        rows = self.rows(by_day)
        assert rows[0] == ["date", "api_calls", "tokens"]
        assert len(rows) == 1 + L.period_end(last).day  # every day of the month
        assert rows[1] == [last.isoformat(), "9", "90"]
        assert rows[-1] == [L.period_end(last).isoformat(), "3", "30"]

        by_member = self.rows(admin.get("/usage/export.csv", {"month": f"{last:%Y-%m}", "by": "member"}))
        assert by_member[0] == ["member", "user_id", "api_calls", "tokens"]
        assert sorted(by_member[1:]) == sorted([[user.email, str(user.pk), "7", "70"], ["API keys", "", "3", "30"],
                                                ["'=cmd@example.com", str(formula.pk), "2", "20"],
                                                ["Deleted member #987654", "987654", "1", "5"]])  # fmt: skip
        assert self.rows(admin.get("/usage/export.csv"))[1:] != rows[1:]  # this month by default
        page = admin.get("/usage/", {"month": f"{last:%Y-%m}"}).content.decode()
        assert f'href="/usage/export.csv?month={last:%Y-%m}&amp;by=member"' in page

        own = self.rows(user_client.get("/usage/export.csv", {"month": f"{last:%Y-%m}"}))
        assert own[1] == [last.isoformat(), "7", "70"]  # one's own calls only
        assert user_client.get("/usage/export.csv", {"by": "member"}).status_code == 403
        assert 'data-testid="export-members"' not in user_client.get("/usage/").content.decode()

    def test_a_month_by_api_key(self, tenant_alpha: TenantFixture) -> None:
        last = L.period_start(L.period_start(L.today()) - dt.timedelta(days=1))
        with schema_context(tenant_alpha.tenant.schema_name):
            sync, _secret = api_key_create(actor=TEST_ACTOR, name="=HYPERLINK(1)", role=Role.USER)
            reports, _secret = api_key_create(actor=TEST_ACTOR, name="Reports", role=Role.USER)
            ApiKeyUsage.objects.create(api_key=sync, date=last, api_calls=3, tokens_used=30)
            ApiKeyUsage.objects.create(api_key=reports, date=L.today(), api_calls=8, tokens_used=80)  # this month
            api_key_revoke(actor=TEST_ACTOR, api_key=sync)
        admin = logged_in(tenant_alpha, Role.ADMIN)
        rows = self.rows(admin.get("/usage/export.csv", {"month": f"{last:%Y-%m}", "by": "api_key"}))
        assert rows == [["api_key", "prefix", "api_key_id", "revoked", "api_calls", "tokens"],
                        ["'=HYPERLINK(1)", f"hn_{sync.prefix}", str(sync.pk), "yes", "3", "30"]]  # fmt: skip
        assert self.rows(admin.get("/usage/export.csv", {"by": "api_key"}))[1][0] == "Reports"
        user_client, _user = member_client(tenant_alpha, Role.USER)
        assert user_client.get("/usage/export.csv", {"by": "api_key"}).status_code == 403

    @pytest.mark.parametrize(("params", "field"), [({"month": "2026-13"}, "month"), ({"by": "week"}, "by")])
    def test_bad_input_is_a_400(self, tenant_alpha: TenantFixture, params: dict[str, str], field: str) -> None:
        response = logged_in(tenant_alpha, Role.ADMIN).get("/usage/export.csv", params)
        assert response.status_code == 400
        assert list(response.json()["error"]["details"]) == [field]

    def test_it_needs_a_login_and_shows_no_other_tenant(
        self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture
    ) -> None:
        assert tenant_alpha.client().get("/usage/export.csv").status_code == 302
        stat(tenant_beta, None, calls=50, tokens=500)
        rows = self.rows(logged_in(tenant_alpha, Role.ADMIN).get("/usage/export.csv"))
        assert sum(int(row[1]) for row in rows[1:]) == 0
