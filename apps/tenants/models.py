from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from django_tenants.models import DomainMixin, TenantMixin
from django_tenants.utils import schema_exists

from apps.core.models import TimeStampedModel

if TYPE_CHECKING:
    from django.db.models.fields.related_descriptors import RelatedManager


class TenantStatus(models.TextChoices):
    TRIAL = "trial", _("Trial")
    ACTIVE = "active", _("Active")
    SUSPENDED = "suspended", _("Suspended")
    CANCELLED = "cancelled", _("Cancelled")


#: The per-tenant quota overrides staff may set (apps.usage.limits reads them).
QUOTA_OVERRIDE_FIELDS = (
    "api_calls_per_month_override",
    "storage_mb_override",
    "max_users_override",
    "max_mcp_services_override",
    "rate_limit_per_minute_override",
)

#: Statuses whose hosts answer 403 instead of serving the tenant.
BLOCKED_STATUSES = frozenset({TenantStatus.SUSPENDED, TenantStatus.CANCELLED})


class Tenant(TenantMixin, TimeStampedModel):  # type: ignore[django-manager-missing]  # swappable FK in DomainMixin
    """An organisation. Its business data lives in its own PostgreSQL schema."""

    if TYPE_CHECKING:
        domains: RelatedManager[Domain]

    name = models.CharField(_("name"), max_length=100)
    slug = models.SlugField(_("slug"), max_length=63, unique=True)
    # NULL only for the public (platform) row.
    plan = models.ForeignKey(
        "plans.Plan", on_delete=models.PROTECT, null=True, blank=True, related_name="tenants", verbose_name=_("plan")
    )
    status = models.CharField(_("status"), max_length=16, choices=TenantStatus.choices, default=TenantStatus.ACTIVE)
    trial_ends_at = models.DateTimeField(_("trial ends at"), null=True, blank=True)
    owner_email = models.EmailField(_("owner email"), blank=True)
    suspended_at = models.DateTimeField(_("suspended at"), null=True, blank=True)
    status_reason = models.CharField(_("reason for the status"), max_length=255, blank=True)
    # Per-tenant quota overrides set by staff; empty means the plan's limit (apps.usage.limits).
    api_calls_per_month_override = models.PositiveBigIntegerField(
        _("API calls per month (override)"), null=True, blank=True, help_text=_("Empty: the plan's limit.")
    )
    storage_mb_override = models.PositiveBigIntegerField(
        _("storage MB (override)"), null=True, blank=True, help_text=_("Empty: the plan's limit.")
    )
    max_users_override = models.PositiveIntegerField(
        _("users (override)"), null=True, blank=True, help_text=_("Empty: the plan's limit.")
    )
    max_mcp_services_override = models.PositiveIntegerField(
        _("MCP services (override)"), null=True, blank=True, help_text=_("Empty: the plan's limit.")
    )
    rate_limit_per_minute_override = models.PositiveIntegerField(
        _("requests per minute (override)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],  # 0 would refuse every request for good, with "try again in 60 s"
        help_text=_("Empty: the plan's limit."),
    )
    # Set by the tenant's admins: once the month's overage reaches it, AI calls stop. Integer fen.
    spending_cap_fen = models.PositiveBigIntegerField(
        _("monthly spending cap on overage (fen)"), null=True, blank=True, help_text=_("Empty: no cap.")
    )
    # Set by the tenant's admins: the AI calls each member may make a UTC day (apps.usage.meter). API keys,
    # which are no member's, are not limited by it.
    member_daily_calls = models.PositiveIntegerField(
        _("AI calls a member may make a day"), null=True, blank=True, help_text=_("Empty: no limit.")
    )

    auto_create_schema = True
    auto_drop_schema = False
    #: How the schema was made on creation: "clone" or "migrations".
    schema_made_by: str | None = None

    class Meta:
        ordering = ("name",)
        verbose_name = _("tenant")
        verbose_name_plural = _("tenants")
        constraints = [
            # One live workspace per owner email; a cancelled one frees it.
            models.UniqueConstraint(
                fields=["owner_email"],
                condition=~Q(owner_email="") & ~Q(status="cancelled"),
                name="tenants_tenant_owner_email_live_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    def create_schema(self, check_if_exists: bool = False, sync_schema: bool = True, verbosity: int = 1) -> bool:
        """Clone the base schema while it is current, else migrate (apps.tenants.schemas)."""
        from apps.tenants.schemas import schema_create

        if not sync_schema or (check_if_exists and schema_exists(self.schema_name)):
            return super().create_schema(check_if_exists=check_if_exists, sync_schema=sync_schema, verbosity=verbosity)
        self.schema_made_by = schema_create(self.schema_name, verbosity=verbosity)
        return True

    @property
    def is_blocked(self) -> bool:
        return self.status in BLOCKED_STATUSES

    @property
    def primary_hostname(self) -> str:
        return f"{self.slug}.{settings.BASE_HOSTNAME}"

    @property
    def url(self) -> str:
        """The tenant's web address on the platform domain, with a trailing slash."""
        return f"{settings.SITE_SCHEME}://{self.slug}.{settings.BASE_DOMAIN}/"


class Domain(DomainMixin):
    """A host name that routes to a tenant: <slug>.BASE_DOMAIN or a custom domain."""

    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("domain")
        verbose_name_plural = _("domains")


class PlatformAuditEvent(models.Model):
    """What platform staff, sign-ups and commands did to tenants. Append-only.

    Lives in the public schema; a database trigger rejects UPDATE and DELETE.
    """

    # No constraint: deleting a staff user must not have to update the trail.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    # Who acted, as text that survives the actor's deletion: a staff email,
    # "signup" for the public sign-up, "cli" for a management command.
    actor_label = models.CharField(max_length=254)
    action = models.CharField(max_length=64, db_index=True)
    tenant_schema = models.CharField(max_length=63, blank=True, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ("-created_at", "-id")
        verbose_name = _("platform audit event")
        verbose_name_plural = _("platform audit events")

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_label} {self.action}"
