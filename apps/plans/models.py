from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import formats
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from apps.core.models import TimeStampedModel


class Plan(TimeStampedModel):
    """A subscription plan. NULL in a limit means unlimited; money is integer fen."""

    code = models.SlugField(_("code"), max_length=32, unique=True)
    name_en = models.CharField(_("name (English)"), max_length=64)
    name_zh = models.CharField(_("name (Chinese)"), max_length=64)
    # NULL: priced by contract ("contact sales").
    price_fen_per_month = models.PositiveBigIntegerField(_("price per month (fen)"), null=True, blank=True)
    api_calls_per_month = models.PositiveBigIntegerField(_("API calls per month"), null=True, blank=True)
    storage_mb = models.PositiveBigIntegerField(_("storage (MB)"), null=True, blank=True)
    max_users = models.PositiveIntegerField(_("users"), null=True, blank=True)
    max_mcp_services = models.PositiveIntegerField(_("MCP services"), null=True, blank=True)
    rate_limit_per_minute = models.PositiveIntegerField(_("requests per minute"), validators=[MinValueValidator(1)])
    # Overage: NULL when the plan has none (free: hard stop; enterprise: by contract).
    overage_fen_per_1000_calls = models.PositiveBigIntegerField(
        _("overage per 1,000 calls (fen)"), null=True, blank=True
    )
    overage_fen_per_gb_month = models.PositiveBigIntegerField(_("overage per GB-month (fen)"), null=True, blank=True)
    hard_stop = models.BooleanField(
        _("hard stop at quota"), default=False, help_text=_("Refuse calls past the quota instead of billing overage.")
    )
    self_serve = models.BooleanField(
        _("self-serve"), default=True, help_text=_("Organisations may choose this plan when they sign up.")
    )
    is_active = models.BooleanField(_("active"), default=True)
    sort_order = models.PositiveSmallIntegerField(_("sort order"), default=0)

    class Meta:
        ordering = ("sort_order", "id")
        verbose_name = _("plan")
        verbose_name_plural = _("plans")

    def __str__(self) -> str:
        return self.display_name

    @property
    def display_name(self) -> str:
        return self.name_zh if (get_language() or "").startswith("zh") else self.name_en

    @property
    def price_yuan(self) -> str | None:
        """The monthly price as a display string in yuan, or None when custom."""
        return fen_to_yuan(self.price_fen_per_month)

    @property
    def overage_yuan_per_1000_calls(self) -> str | None:
        return fen_to_yuan(self.overage_fen_per_1000_calls)

    @property
    def overage_yuan_per_gb_month(self) -> str | None:
        return fen_to_yuan(self.overage_fen_per_gb_month)


def fen_to_yuan(fen: int | None) -> str | None:
    """Integer fen as a yuan display string in the active language, always to the fen and grouped by three, so
    amounts shown together line up: 9900 -> "99.00", 1050 -> "10.50", 100000000 -> "1,000,000.00"."""
    if fen is None:
        return None
    return formats.number_format(Decimal(fen) / 100, 2, force_grouping=True)
