"""Web forms of usage. They shape input; apps.usage.services decides."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django import forms
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from apps.plans.models import fen_to_yuan
from apps.usage import limits as L
from apps.usage.services import MAX_MEMBER_DAILY_CALLS, MAX_SPENDING_CAP_FEN

FEN_PER_YUAN = 100


class SpendingCapForm(forms.Form):
    """The monthly spending cap in yuan, to at most two decimals; ``cleaned_data["cap_fen"]`` is it in fen."""

    cap_yuan = forms.DecimalField(
        label=_("Monthly spending cap (¥)"),
        min_value=Decimal(0),
        decimal_places=2,
        error_messages={"max_decimal_places": _("Give the cap to the fen: at most two decimals.")},
        help_text=_("Overage stops once it reaches this amount in a month. 0 allows no overage at all."),
        widget=forms.NumberInput(attrs={"step": "0.01", "min": "0", "inputmode": "decimal"}),
    )

    def clean_cap_yuan(self) -> Decimal:
        # Here, not with max_value and max_digits: a huge amount got both their messages, the limit unformatted.
        yuan: Decimal = self.cleaned_data["cap_yuan"]
        most = Decimal(MAX_SPENDING_CAP_FEN) / FEN_PER_YUAN
        if yuan > most:
            raise forms.ValidationError(
                _("The cap can be at most ¥%(most)s a month.") % {"most": fen_to_yuan(MAX_SPENDING_CAP_FEN)}
            )
        return yuan

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        yuan = data.get("cap_yuan")
        if yuan is not None:
            # Exact: the field allows at most two decimals, so this is a whole number of fen.
            data["cap_fen"] = int(yuan * FEN_PER_YUAN)
        return data


class MemberDailyCallsForm(forms.Form):
    """The AI calls each member may make a day."""

    calls = forms.IntegerField(
        label=_("AI calls a member may make a day"),
        min_value=1,
        max_value=MAX_MEMBER_DAILY_CALLS,
        # Worded and grouped as the spending cap's limit, not Django's "less than or equal to 1000000".
        error_messages={
            "max_value": format_lazy(
                _("A member may be allowed at most {most} calls a day."), most=f"{MAX_MEMBER_DAILY_CALLS:,}"
            )
        },
        help_text=_("Counted by UTC day, model rounds and tool calls alike. API keys are not limited by it."),
        widget=forms.NumberInput(attrs={"min": "1", "inputmode": "numeric"}),
    )


BAD_MONTH = _("Give the month as YYYY-MM, for example 2026-11.")


class UsageMonthForm(forms.Form):
    """The month the usage page shows, ``?month=YYYY-MM``; ``cleaned_data["month"]`` is its first day (None: this
    month). A month that has not started is refused, as there is nothing to show."""

    month = forms.RegexField(regex=r"\A[0-9]{4}-[0-9]{2}\Z", required=False, error_messages={"invalid": BAD_MONTH})

    def clean_month(self) -> dt.date | None:
        value = self.cleaned_data.get("month")
        if not value:
            return None
        year, month = (int(part) for part in value.split("-"))
        if not (1 <= month <= 12 and year >= 2000):
            raise forms.ValidationError(BAD_MONTH)
        first = dt.date(year, month, 1)
        if first > L.period_start(L.today()):
            raise forms.ValidationError(_("That month has not started yet."))
        return first
