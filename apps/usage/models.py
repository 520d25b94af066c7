"""What a tenant used: the ledger of AI calls, the per-user daily totals, and quota alerts.

All three live in the tenant's schema. ``UsageEvent`` is the durable ledger: one
row per AI call (a model round or an MCP tool invocation), written when the call
ends. The flush task moves ledger rows into ``UsageStat`` (the design notes'
``usage_stats``: per user per day), and the calls made with API keys also into
``ApiKeyUsage`` (per key per day), in one statement, so a retried flush never
counts twice. Redis holds the live counters the quota checks read; when Redis
loses them they are rebuilt from ``UsageStat`` plus the ledger rows not yet
flushed (apps.usage.meter).
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class CallKind(models.TextChoices):
    MODEL = "model", _("Model call")
    TOOL = "tool", _("Tool call")


class Quota(models.TextChoices):
    API_CALLS = "api_calls", _("API calls")
    STORAGE = "storage", _("Storage")
    USERS = "users", _("Users")
    MCP_SERVICES = "mcp_services", _("MCP services")


# The quota alerts' other kind: the month's overage reached the admins' spending cap, and calls stop there.
SPENDING_CAP = "spending_cap"
ALERT_KINDS = [*Quota.choices, (SPENDING_CAP, _("Spending cap"))]


class UsageEvent(models.Model):
    """One AI call, not yet flushed into ``UsageStat``. The flush deletes what it moves."""

    # NULL: a call made with an API key (counted under "API keys", not a person).
    user = models.ForeignKey("accounts.User", on_delete=models.DO_NOTHING, db_constraint=False, null=True,
                             related_name="+")  # fmt: skip
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.DO_NOTHING, db_constraint=False, null=True,
                                related_name="+")  # fmt: skip
    kind = models.CharField(max_length=8, choices=CallKind.choices)
    calls = models.PositiveIntegerField(default=1)
    tokens = models.PositiveBigIntegerField(default=0)
    # The day (UTC) the call counts on; its month is the billing period.
    day = models.DateField()
    # counted_calls is false when Redis could not be reached to count the call; counted_tokens is false
    # until the flush (or a rebuild) adds the tokens there, as the ledger writes them (apps.usage.ledger).
    counted_calls = models.BooleanField(default=True)
    counted_tokens = models.BooleanField(default=True)
    # The generations of the live counters the counted parts are in: "<month hash's>/<day hash's>",
    # or one name where both hashes have the same ("" before generations, or when Redis counted
    # nothing). A hash rebuilt after Redis lost it starts a new generation, so the flush can tell
    # calls counted in the lost hash, still in flight then, from the others, in each hash apart.
    # At most 16 characters: generations are 7 (apps.usage.meter.Meter.rebuild), those from before
    # 2026-12-07 8, and a row names at most one of those.
    counted_in = models.CharField(max_length=16, blank=True, default="", db_default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["day"], name="usage_event_day_idx")]

    def __str__(self) -> str:
        return f"{self.day} {self.kind} user={self.user_id} calls={self.calls} tokens={self.tokens}"


class UsageStat(models.Model):
    """Per user per day: API calls and tokens; the tenant's row (user NULL) also holds storage."""

    user = models.ForeignKey("accounts.User", on_delete=models.DO_NOTHING, db_constraint=False, null=True,
                             related_name="+")  # fmt: skip
    date = models.DateField()
    api_calls = models.PositiveBigIntegerField(default=0)
    tokens_used = models.PositiveBigIntegerField(default=0)
    # Only on the tenant's row (user NULL): the schema's size measured that day.
    storage_used_mb = models.DecimalField(max_digits=12, decimal_places=3, default=0)
    storage_bytes = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "usage_stats"
        constraints = [
            models.UniqueConstraint(fields=["user", "date"], nulls_distinct=False, name="usage_stats_user_date_unique")
        ]
        indexes = [models.Index(fields=["date"], name="usage_stats_date_idx")]

    def __str__(self) -> str:
        return f"{self.date} user={self.user_id} calls={self.api_calls} tokens={self.tokens_used}"


class ApiKeyUsage(models.Model):
    """Per API key per day: API calls and tokens. A breakdown of the keys' calls, which ``UsageStat`` counts on
    the tenant's row (user NULL) with nothing to tell one key from another; the flush writes both in one
    statement. Keys are revoked, never deleted, so every row's key exists."""

    # No index of its own: the unique constraint's (api_key, date) serves lookups by key.
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.DO_NOTHING, db_constraint=False,
                                db_index=False, related_name="+")  # fmt: skip
    date = models.DateField()
    api_calls = models.PositiveBigIntegerField(default=0)
    tokens_used = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "usage_api_key_stats"
        constraints = [models.UniqueConstraint(fields=["api_key", "date"], name="usage_api_key_stats_key_date_unique")]
        indexes = [models.Index(fields=["date"], name="usage_api_key_stats_date_idx")]

    def __str__(self) -> str:
        return f"{self.date} api_key={self.api_key_id} calls={self.api_calls} tokens={self.tokens_used}"


class QuotaAlert(models.Model):
    """A quota crossed 80, 90 or 100% of a limit in a period. Unique per (quota, period, threshold, limit): it fires
    once a month for each limit the quota has that month.

    The row is the recorded event: the banner reads it, the admins' email is sent
    from it, and webhooks deliver it (``delivered_at``). The limit is part of what fired: a workspace moved to
    another plan (or given an override) within the month is told of its use against the new limit too, as the
    thresholds of the old one say nothing of it (until 2026-12-07 a workspace that upgraded after the free plan's
    100 % was never told that the new plan's quota was used up and calls were billed as overage).
    """

    # A quota, or the spending cap (``limit`` and ``used`` then in fen: the cap and the month's overage).
    quota = models.CharField(_("quota"), max_length=16, choices=ALERT_KINDS)
    period = models.DateField(_("period"), help_text=_("The first day of the month the alert belongs to."))
    threshold = models.PositiveSmallIntegerField(_("threshold (%)"))
    limit = models.PositiveBigIntegerField(_("limit"))
    used = models.PositiveBigIntegerField(_("used"))
    created_at = models.DateTimeField(_("time"), auto_now_add=True)
    emailed_at = models.DateTimeField(null=True, blank=True)
    # Not emailed, as it said nothing new when its email was due (a higher threshold's came first; the cap changed).
    email_skipped = models.BooleanField(
        db_default=False
    )  # a default in the table: ``quota_alerts_raise`` inserts by SQL
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = [
            models.UniqueConstraint(fields=["quota", "period", "threshold", "limit"], name="quota_alert_once_per_limit")
        ]
        indexes = [models.Index(fields=["period"], name="quota_alert_period_idx")]

    def __str__(self) -> str:
        return f"{self.period:%Y-%m} {self.quota} {self.threshold}%"
