"""Writes to tenants: provisioning, status changes, and the platform audit trail."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django_tenants.utils import get_public_schema_name, schema_context, schema_exists

from apps.accounts.models import Role, User
from apps.accounts.services import normalize_email, user_create, validate_new_password
from apps.core.actors import Actor
from apps.core.exceptions import ApplicationError, InvalidInput
from apps.plans.models import Plan
from apps.tenants.models import (
    BLOCKED_STATUSES,
    QUOTA_OVERRIDE_FIELDS,
    Domain,
    PlatformAuditEvent,
    Tenant,
    TenantStatus,
)
from apps.tenants.slugs import normalize_slug, schema_name_for_slug, validate_slug

if TYPE_CHECKING:
    from apps.usage.limits import Limits

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProvisionResult:
    tenant: Tenant
    admin: User
    # Set only when the service chose the password, so the caller can show it once.
    generated_password: str | None


def platform_audit_record(
    *,
    actor: Actor,
    action: str,
    tenant: Tenant | None = None,
    target_type: str = "",
    target_id: str | int = "",
    metadata: dict[str, Any] | None = None,
) -> PlatformAuditEvent:
    """Append one event to the platform audit trail, inside the caller's transaction.

    The target defaults to ``tenant`` itself.
    """
    if tenant is not None and not target_type:
        target_type, target_id = "tenant", tenant.pk
    return PlatformAuditEvent.objects.create(
        actor=actor.user,
        actor_label=actor.display,
        action=action,
        tenant_schema=tenant.schema_name if tenant is not None else "",
        target_type=target_type,
        target_id=str(target_id),
        ip=actor.ip,
        user_agent=actor.user_agent[:512],
        metadata=metadata or {},
    )


def _name_errors(name: str) -> list[str]:
    if not name:
        return [_("This field is required.")]
    if len(name) > 100:
        return [_("Use at most 100 characters.")]
    return []


def _slug_errors(slug: str) -> list[str]:
    try:
        slug = validate_slug(slug)
    except InvalidInput as exc:
        return list(exc.details["slug"])
    if Tenant.objects.filter(slug=slug).exists() or schema_exists(schema_name_for_slug(slug)):
        return [_("This address is already taken.")]
    return []


def _plan_for(plan: Plan | str, *, self_serve_only: bool) -> tuple[Plan | None, list[str]]:
    plan_obj = (
        plan if isinstance(plan, Plan) else Plan.objects.filter(code=(plan or "").strip(), is_active=True).first()
    )
    if plan_obj is None:
        return None, [_("Choose one of the available plans.")]
    if self_serve_only and not plan_obj.self_serve:
        return None, [_("This plan is arranged with our sales team. Choose another plan or contact us.")]
    return plan_obj, []


def _owner_email_errors(email: str) -> list[str]:
    try:
        validate_email(email)
    except ValidationError as exc:
        return list(exc.messages)
    if Tenant.objects.filter(owner_email=email).exclude(status=TenantStatus.CANCELLED).exists():
        return [_("This email address already owns a workspace.")]
    return []


def _validate_provision_input(
    *, name: str, slug: str, plan: Plan | str, admin_email: str, admin_password: str | None, self_serve_only: bool
) -> tuple[str, str, Plan, str]:
    """Check every field and report all problems at once, as a form would."""
    name, slug, admin_email = (name or "").strip(), normalize_slug(slug), normalize_email(admin_email)
    plan_obj, plan_errors = _plan_for(plan, self_serve_only=self_serve_only)
    errors = {
        "name": _name_errors(name),
        "slug": _slug_errors(slug),
        "plan": plan_errors,
        "admin_email": _owner_email_errors(admin_email),
    }
    if admin_password is not None and not errors["admin_email"]:
        try:
            validate_new_password(password=admin_password, email=admin_email, field="admin_password")
        except InvalidInput as exc:
            errors.update(exc.details)
    errors = {field: messages for field, messages in errors.items() if messages}
    if errors:
        raise InvalidInput(_("The input is not valid."), details=errors)
    assert plan_obj is not None
    return name, slug, plan_obj, admin_email


def tenant_provision(
    *,
    name: str,
    slug: str,
    plan: Plan | str,
    admin_email: str,
    admin_password: str | None = None,
    actor: Actor,
    self_serve_only: bool = False,
    on_progress: Callable[[str], None] | None = None,
) -> ProvisionResult:
    """Create a tenant with its schema, primary domain and first admin, all or nothing.

    The schema is cloned from ``settings.TENANT_BASE_SCHEMA`` (django-tenants
    falls back to running migrations while that schema is missing). PostgreSQL
    DDL is transactional, so when any step fails the schema, the tenant row and
    the domain all roll back together.

    With ``admin_password=None`` a password is generated and returned once in
    the result. ``self_serve_only`` refuses plans that are sold by contract, as
    the public sign-up must. ``on_progress`` receives a line per step.
    """
    progress = on_progress or (lambda message: None)
    name, slug, plan_obj, admin_email = _validate_provision_input(
        name=name,
        slug=slug,
        plan=plan,
        admin_email=admin_email,
        admin_password=admin_password,
        self_serve_only=self_serve_only,
    )
    progress(f"Input is valid: {slug} on plan {plan_obj.code}")
    generated_password = None
    if admin_password is None:
        generated_password = admin_password = secrets.token_urlsafe(12)

    is_trial = plan_obj.price_fen_per_month not in (None, 0)
    try:
        with transaction.atomic():
            tenant = Tenant(
                schema_name=schema_name_for_slug(slug),
                name=name,
                slug=slug,
                plan=plan_obj,
                status=TenantStatus.TRIAL if is_trial else TenantStatus.ACTIVE,
                trial_ends_at=timezone.now() + timedelta(days=settings.TRIAL_DAYS) if is_trial else None,
                owner_email=admin_email,
            )
            progress(f"Creating schema {tenant.schema_name}")
            tenant.save(verbosity=0)  # type: ignore[call-arg]  # TenantMixin.save creates the schema
            how = f"cloned {settings.TENANT_BASE_SCHEMA}" if tenant.schema_made_by == "clone" else "ran migrations"
            progress(f"Schema {tenant.schema_name} ready ({how})")
            progress(f"Adding domain {tenant.primary_hostname}")
            Domain.objects.create(domain=tenant.primary_hostname, tenant=tenant, is_primary=True)
            progress(f"Creating admin {admin_email}")
            with schema_context(tenant.schema_name):
                admin = user_create(
                    actor=Actor(label=f"platform:{actor.display}", ip=actor.ip, user_agent=actor.user_agent),
                    email=admin_email,
                    password=admin_password,
                    role=Role.ADMIN,
                    email_field="admin_email",
                    password_field="admin_password",  # noqa: S106 (names a form field)
                )
            platform_audit_record(
                actor=actor,
                action="tenant.provisioned",
                tenant=tenant,
                metadata={"slug": slug, "plan": plan_obj.code, "admin_email": admin_email},
            )
    except IntegrityError as exc:
        # Two sign-ups raced for the same slug or email; the loser gets a 400.
        logger.info("provisioning %s lost a race: %s", slug, exc)
        raise InvalidInput(
            _("This address or email was just taken. Choose another."),
            details={"slug": [_("This address is already taken.")]},
        ) from exc

    from apps.accounts.tasks import send_welcome_email

    schema_name, admin_id, language = tenant.schema_name, admin.pk, translation.get_language() or "zh-hans"
    transaction.on_commit(
        lambda: send_welcome_email.apply_async(args=[admin_id, language], headers={"_schema_name": schema_name}),
        robust=True,  # the tenant exists either way; a broker outage loses only this email, and logs it
    )
    from apps.usage.tasks import measure_storage

    # The schema's size, so that the usage page and the storage quota start from it rather than from 0.
    transaction.on_commit(
        lambda: measure_storage.apply_async(headers={"_schema_name": schema_name}),
        robust=True,  # the periodic measurement comes within ten minutes anyway
    )
    logger.info("provisioned tenant %s (%s) on plan %s", slug, tenant.schema_name, plan_obj.code)
    return ProvisionResult(tenant=tenant, admin=admin, generated_password=generated_password)


@transaction.atomic
def tenant_suspend(*, tenant: Tenant, actor: Actor, reason: str = "") -> Tenant:
    """Block the tenant's hosts with 403 ``tenant_suspended``; its data stays."""
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    if tenant.status == TenantStatus.SUSPENDED:
        raise ApplicationError(_("The tenant is already suspended."), code="invalid_state")
    if tenant.schema_name == get_public_schema_name():
        raise ApplicationError(_("The platform itself cannot be suspended."), code="invalid_state")
    previous = tenant.status
    tenant.status = TenantStatus.SUSPENDED
    tenant.suspended_at = timezone.now()
    tenant.status_reason = reason[:255]
    tenant.save(update_fields=["status", "suspended_at", "status_reason", "updated_at"])
    platform_audit_record(
        actor=actor,
        action="tenant.suspended",
        tenant=tenant,
        metadata={"previous_status": previous, "reason": reason},
    )
    return tenant


@transaction.atomic
def tenant_reactivate(*, tenant: Tenant, actor: Actor) -> Tenant:
    """Lift a suspension or cancellation: back to trial while the trial runs, else active."""
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    if tenant.status not in BLOCKED_STATUSES:
        raise ApplicationError(_("The tenant is not suspended or cancelled."), code="invalid_state")
    previous = tenant.status
    in_trial = tenant.trial_ends_at is not None and tenant.trial_ends_at > timezone.now()
    tenant.status = TenantStatus.TRIAL if in_trial else TenantStatus.ACTIVE
    tenant.suspended_at = None
    tenant.status_reason = ""
    try:
        with transaction.atomic():
            tenant.save(update_fields=["status", "suspended_at", "status_reason", "updated_at"])
    except IntegrityError as exc:  # a cancelled tenant's owner email now owns another workspace
        raise ApplicationError(
            _("The owner email of this tenant now owns another workspace."), code="invalid_state"
        ) from exc
    platform_audit_record(
        actor=actor,
        action="tenant.reactivated",
        tenant=tenant,
        metadata={"previous_status": previous, "status": tenant.status},
    )
    return tenant


@transaction.atomic
def tenant_update(
    *,
    tenant: Tenant,
    actor: Actor,
    name: str | None = None,
    plan: Plan | None = None,
    overrides: dict[str, int | None] | None = None,
) -> Tenant:
    """Rename a tenant, move it to another plan or override its quotas, as staff do in the admin.

    ``overrides`` maps fields of QUOTA_OVERRIDE_FIELDS to a limit, or None for the plan's.
    """
    from apps.usage import limits as L

    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    before = L.limits_for(tenant)
    changes: dict[str, list[Any]] = {}
    if name is not None and name.strip() != tenant.name:
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidInput(_("The input is not valid."), details={"name": [_("Use 1 to 100 characters.")]})
        changes["name"] = [tenant.name, name]
        tenant.name = name
    if plan is not None and plan.pk != tenant.plan_id:
        changes["plan"] = [tenant.plan.code if tenant.plan else "", plan.code]
        tenant.plan = plan
    for field, value in (overrides or {}).items():
        if field not in QUOTA_OVERRIDE_FIELDS:
            raise InvalidInput(_("The input is not valid."), details={field: [_("This field is not accepted here.")]})
        if value is not None and value < 0:
            raise InvalidInput(_("The input is not valid."), details={field: [_("Enter zero or more.")]})
        if getattr(tenant, field) != value:
            changes[field] = [getattr(tenant, field), value]
            setattr(tenant, field, value)
    if not changes:
        return tenant
    tenant.save(update_fields=["name", "plan", *QUOTA_OVERRIDE_FIELDS, "updated_at"])
    platform_audit_record(
        actor=actor,
        action="tenant.updated",
        tenant=tenant,
        metadata={"changes": changes},
    )
    _alert_lowered_limits(tenant, before)
    return tenant


def _alert_lowered_limits(tenant: Tenant, before: Limits) -> None:
    """Queue the quota alerts a lower limit puts the tenant's use past: no call, member or service that the
    limit now refuses gets far enough to raise them (``apps.usage.services.quota_alerts_catch_up``). Where work
    now stops at a limit that stayed (a plan without overage), its 100 % alert is emailed again."""
    from apps.usage import limits as L
    from apps.usage.services import quotas_lowered, stops_moved_sooner
    from apps.usage.tasks import alerts_after_limits_lowered

    after = L.limits_for(tenant)
    lowered, restate = quotas_lowered(before, after), stops_moved_sooner(before, after)
    if (lowered or restate) and tenant.status not in BLOCKED_STATUSES:
        schema = tenant.schema_name
        transaction.on_commit(
            lambda: alerts_after_limits_lowered.apply_async(
                args=[lowered], kwargs={"restate": restate}, headers={"_schema_name": schema}
            ),
            robust=True,
        )


@transaction.atomic
def platform_ensure_public_tenant() -> Tenant:
    """Make sure the platform's own row exists and BASE_DOMAIN routes to the public schema."""
    public = get_public_schema_name()
    tenant, _created = Tenant.objects.get_or_create(
        schema_name=public,
        defaults={"name": "HydroNet Cloud", "slug": public, "status": TenantStatus.ACTIVE},
    )
    hostname = settings.BASE_HOSTNAME
    domain = Domain.objects.filter(domain=hostname).first()
    if domain is None:
        Domain.objects.create(domain=hostname, tenant=tenant, is_primary=True)
    elif domain.tenant_id != tenant.pk:
        raise ApplicationError(
            f"The platform host {hostname} is routed to tenant {domain.tenant_id}; fix the domain table.",
            code="invalid_state",
        )
    return tenant
