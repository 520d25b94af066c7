"""Web forms of usage. They shape input; apps.usage.services decides."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from apps.usage.services import MAX_SPENDING_CAP_FEN

FEN_PER_YUAN = 100


class SpendingCapForm(forms.Form):
    """The monthly spending cap in yuan, to at most two decimals; ``cleaned_data["cap_fen"]`` is it in fen."""

    cap_yuan = forms.DecimalField(
        label=_("Monthly spending cap (¥)"),
        min_value=Decimal(0),
        max_value=Decimal(MAX_SPENDING_CAP_FEN) / FEN_PER_YUAN,
        max_digits=12,
        decimal_places=2,
        help_text=_("Overage stops once it reaches this amount in a month. 0 allows no overage at all."),
        widget=forms.NumberInput(attrs={"step": "0.01", "min": "0", "inputmode": "decimal"}),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        yuan = data.get("cap_yuan")
        if yuan is not None:
            # Exact: the field allows at most two decimals, so this is a whole number of fen.
            data["cap_fen"] = int(yuan * FEN_PER_YUAN)
        return data
