"""The usage page: this month's calls and tokens, the quotas, and the spending cap."""

from __future__ import annotations

import csv
import datetime as dt
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_safe

from apps.accounts.decorators import permission_required
from apps.accounts.permissions import Perm, role_has
from apps.accounts.services import API_KEY_PREFIX
from apps.core.actors import request_actor
from apps.core.exceptions import ApplicationError, json_error
from apps.core.views import post_only
from apps.plans.models import fen_to_yuan
from apps.tenants.selectors import tenant_current
from apps.usage import limits as L
from apps.usage.forms import FEN_PER_YUAN, MemberDailyCallsForm, SpendingCapForm, UsageMonthForm
from apps.usage.models import Quota
from apps.usage.selectors import quota_status, usage_series
from apps.usage.services import member_daily_calls_set, spending_cap_set

# Quota bars: amber from this share of the limit, red at the limit.
WARN_PERCENT = 80


def _yuan(fen: int | None) -> Decimal | None:
    return None if fen is None else (Decimal(fen) / FEN_PER_YUAN).quantize(Decimal("0.01"))


def _quota_bar(row: dict[str, Any]) -> dict[str, Any]:
    """One quota from ``quota_status`` as the page draws it: label, level (colour) and bar values."""
    limit, used = row["limit"], row["used"]
    if limit is None:
        level, percent = "unlimited", None
    else:
        # From the integers, not the rounded percent: 99.96 % is not yet the limit.
        percent = used * 100 // limit if limit else 100
        level = "over" if used >= limit else "warn" if used * 100 >= limit * WARN_PERCENT else "ok"
    return {
        **row,
        "label": Quota(row["quota"]).label,
        "is_bytes": row["quota"] == Quota.STORAGE,
        "level": level,
        "percent_floor": percent,
        # <progress> needs max > 0; a zero limit shows as a full (red) bar.
        "bar_max": max(limit or 0, 1),
        "bar_value": min(used, limit) if limit else 1,
    }


def _month_range(month: dt.date | None) -> tuple[dt.date, dt.date]:
    """The first and last day shown of ``month`` (its first day; None: this month, up to today)."""
    today = L.today()
    start = month or L.period_start(today)
    return start, min(today, L.period_end(start))


def _daily(user: Any, everyone: bool, start: dt.date, end: dt.date) -> list[dict[str, Any]]:
    """Calls and tokens per day: the tenant's with view_stats, else one's own, as in GET /api/usage."""
    own = None if everyone else user.pk
    return usage_series(start=start, end=end, group_by="day", user_id=own, only_user=own is not None)


def _page(
    request: HttpRequest,
    *,
    cap_form: SpendingCapForm | None = None,
    month: dt.date | None = None,
    month_form: UsageMonthForm | None = None,
    member_form: MemberDailyCallsForm | None = None,
    status: int = 200,
) -> HttpResponse:
    """The usage of ``month`` (its first day; this month by default); quotas and the cap only with this month."""
    user: Any = request.user
    tenant = tenant_current()
    everyone = role_has(user.role, Perm.VIEW_STATS)
    today = L.today()
    this_month = L.period_start(today)
    start, end = _month_range(month)
    current = start == this_month
    first_month = L.period_start(tenant.created_at.astimezone(dt.UTC).date())
    daily = _daily(user, everyone, start, end)
    context: dict[str, Any] = {
        "scope": "tenant" if everyone else "user",
        "start": start,
        "end": end,
        "current": current,
        "this_month": this_month,
        "previous_month": L.period_start(start - dt.timedelta(days=1)) if start > first_month else None,
        "next_month": None if current else L.period_start(L.period_end(start) + dt.timedelta(days=1)),
        "month_form": month_form,
        "daily": daily,
        "totals": {"api_calls": sum(d["api_calls"] for d in daily), "tokens": sum(d["tokens"] for d in daily)},
        "chart": {
            "days": [d["date"] for d in daily],
            "api_calls": [d["api_calls"] for d in daily],
            "tokens": [d["tokens"] for d in daily],
            "labels": {"api_calls": _("API calls"), "tokens": _("Tokens")},
        },
    }
    member_daily_calls = tenant.member_daily_calls
    # One's own calls today, against the limit; viewers make no AI calls.
    if current and member_daily_calls is not None and not everyone and role_has(user.role, Perm.CREATE_CONVERSATION):
        context["member_limit"] = {
            "limit": member_daily_calls,
            "used": next((d["api_calls"] for d in daily if d["date"] == today.isoformat()), 0),
            "resets_at": L.day_resets_at(today),
        }
    if everyone:
        context["per_user"] = usage_series(start=start, end=end, group_by="user")
        context["per_key"] = usage_series(start=start, end=end, group_by="api_key")
        if current and member_daily_calls is not None:  # who is near the admins' daily limit
            today_by_user = {
                r["user_id"]: r["api_calls"] for r in usage_series(start=today, end=today, group_by="user")
            }
            for row in context["per_user"]:
                row["today"] = today_by_user.get(row["user_id"], 0) if row["user_id"] is not None else None
            context["member_daily_calls_column"] = member_daily_calls
    if everyone and current:
        quotas = [_quota_bar(row) for row in quota_status(tenant)]
        calls = next(q for q in quotas if q["quota"] == Quota.API_CALLS)
        limits, plan = L.limits_for(tenant), tenant.plan
        context.update(
            quotas=quotas,
            storage_used=next(q["used"] for q in quotas if q["quota"] == Quota.STORAGE),
            resets_at=L.resets_at(today),
            overage_calls=calls["overage"],
            overage_yuan=_yuan(calls["overage_fen"]),
            spending_cap_yuan=_yuan(calls["spending_cap_fen"]),
            hard_stop=limits.hard_stop,
            bills_overage=limits.bills_overage,
            overage_price_yuan=_yuan(limits.overage_fen_per_1000_calls),
            # What storage past the quota costs, where it goes on past it (a hard-stop plan refuses writes instead).
            storage_price_yuan=None if plan is None or limits.storage_stop_at is not None
            else _yuan(plan.overage_fen_per_gb_month),
            cap_form=cap_form or SpendingCapForm(initial={"cap_yuan": _yuan(tenant.spending_cap_fen)}),
            member_daily_calls=member_daily_calls,
            day_resets_at=L.day_resets_at(today),
            member_form=member_form or MemberDailyCallsForm(initial={"calls": member_daily_calls}),
        )  # fmt: skip
    return render(request, "usage/usage.html", context, status=status)


@login_required
@require_safe
def usage_view(request: HttpRequest) -> HttpResponse:
    """Every member may open it: view_stats shows the whole tenant, anyone else their own usage.

    ``?month=YYYY-MM`` shows an earlier month; a bad or future one is a 400 that shows this month.
    """
    month_form = UsageMonthForm(request.GET)
    if not month_form.is_valid():
        return _page(request, month_form=month_form, status=400)
    return _page(request, month=month_form.cleaned_data["month"])


@login_required
@require_safe
def usage_export_view(request: HttpRequest) -> HttpResponse:
    """A month's usage as CSV, as the page shows it: ``?month=YYYY-MM`` (this month by default) and
    ``by=day`` (calls and tokens per day), ``by=member`` (per member) or ``by=api_key`` (per API key); the
    last two need view_stats.

    Members without view_stats get their own calls per day, as on the page.
    """
    user: Any = request.user
    everyone = role_has(user.role, Perm.VIEW_STATS)
    month_form = UsageMonthForm(request.GET)
    by = request.GET.get("by", "day")
    if not month_form.is_valid():
        message = str(month_form.errors["month"][0])
        return json_error("invalid_input", message, status=400, details={"month": [message]})
    if by not in ("day", "member", "api_key"):
        message = _("Choose by=day, by=member or by=api_key.")
        return json_error("invalid_input", message, status=400, details={"by": [message]})
    if by == "member" and not everyone:
        raise PermissionDenied(_("Usage by member needs the view_stats permission."))
    if by == "api_key" and not everyone:
        raise PermissionDenied(_("Usage by API key needs the view_stats permission."))
    start, end = _month_range(month_form.cleaned_data["month"])
    if by == "day":
        header = ["date", "api_calls", "tokens"]
        rows = [[d["date"], d["api_calls"], d["tokens"]] for d in _daily(user, everyone, start, end)]
    elif by == "member":
        header = ["member", "user_id", "api_calls", "tokens"]
        rows = [[_member_label(r), r["user_id"] or "", r["api_calls"], r["tokens"]]
                for r in usage_series(start=start, end=end, group_by="user")]  # fmt: skip
    else:
        header = ["api_key", "prefix", "api_key_id", "revoked", "api_calls", "tokens"]
        rows = [[r["name"], API_KEY_PREFIX + r["prefix"] if r["prefix"] else "", r["api_key_id"],  # as the keys begin
                 "yes" if r["revoked"] else "no", r["api_calls"], r["tokens"]]
                for r in usage_series(start=start, end=end, group_by="api_key")]  # fmt: skip
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="usage-{start:%Y-%m}-by-{by}.csv"'
    # A byte order mark first: Excel reads a CSV without one in the system's code page (GBK on Chinese
    # Windows) and garbles every name and email that is not ASCII. Python's "utf-8-sig" and pandas skip it.
    response.write("\ufeff")
    writer = csv.writer(response)
    writer.writerow(header)
    writer.writerows([[_spreadsheet_safe(cell) for cell in row] for row in rows])
    return response


def _spreadsheet_safe(cell: Any) -> Any:
    """Text that a spreadsheet would run as a formula (=, +, -, @ first) is quoted with ' (OWASP's advice)."""
    if isinstance(cell, str) and cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + cell
    return cell


@permission_required(Perm.MANAGE_BILLING)
@post_only(back="usage:usage")
def spending_cap_view(request: HttpRequest) -> HttpResponse:
    """Set the monthly spending cap in yuan, or remove it (``action=remove``)."""
    form = SpendingCapForm(request.POST)
    valid = form.is_valid()
    remove = request.POST.get("action") == "remove"
    if not remove and not valid:
        return _page(request, cap_form=form, status=400)
    cap_fen = None if remove else form.cleaned_data["cap_fen"]
    try:
        spending_cap_set(actor=request_actor(request), cap_fen=cap_fen)
    except ApplicationError as exc:
        form.add_error(None, exc.message)
        return _page(request, cap_form=form, status=400)
    if cap_fen is None:
        messages.success(request, _("The spending cap is removed."))
    else:
        # ¥1,000.00, as the page shows amounts.
        messages.success(request, _("The spending cap is now ¥%(cap)s a month.") % {"cap": fen_to_yuan(cap_fen)})
    return redirect("usage:usage")


@permission_required(Perm.MANAGE_BILLING)
@post_only(back="usage:usage")
def member_daily_calls_view(request: HttpRequest) -> HttpResponse:
    """Set the AI calls each member may make a day, or remove the limit (``action=remove``)."""
    form = MemberDailyCallsForm(request.POST)
    remove = request.POST.get("action") == "remove"
    if not remove and not form.is_valid():
        return _page(request, member_form=form, status=400)
    calls = None if remove else form.cleaned_data["calls"]
    try:
        member_daily_calls_set(actor=request_actor(request), calls=calls)
    except ApplicationError as exc:
        form.add_error(None, exc.message)
        return _page(request, member_form=form, status=400)
    if calls is None:
        messages.success(request, _("Members' calls a day are no longer limited."))
    else:
        done = ngettext(
            "Each member may now make %(calls)s AI call a day.",
            "Each member may now make %(calls)s AI calls a day.",
            calls,
        )
        messages.success(request, done % {"calls": number_format(calls, force_grouping=True)})
    return redirect("usage:usage")


def _member_label(row: dict[str, Any]) -> str:
    """The member column of the CSV, as the page's table names them."""
    if not row["user_id"]:
        return _("API keys")
    return row["email"] or _("Deleted member #%(id)s") % {"id": row["user_id"]}
