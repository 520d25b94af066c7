from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _
from django_tenants.utils import schema_context

from apps.core.actors import request_actor
from apps.core.exceptions import ApplicationError, InvalidInput, put_on_form
from apps.plans.models import Plan
from apps.tenants.admin_audit import PlatformAuditedAdmin
from apps.tenants.models import QUOTA_OVERRIDE_FIELDS, Domain, PlatformAuditEvent, Tenant
from apps.tenants.services import tenant_provision, tenant_reactivate, tenant_suspend, tenant_update
from apps.usage.limits import limits_for
from apps.usage.models import Quota
from apps.usage.selectors import quota_status, usage_by_tenant
from apps.usage.templatetags.usage_units import megabytes


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0
    fields = ("domain", "is_primary", "created_at")
    readonly_fields = ("created_at",)


class ProvisionForm(forms.Form):
    name = forms.CharField(label=_("Organisation name"), max_length=100)
    slug = forms.CharField(label=_("Slug"), max_length=63)
    plan = forms.ModelChoiceField(label=_("Plan"), queryset=Plan.objects.filter(is_active=True))
    admin_email = forms.EmailField(label=_("Admin email"))


@admin.register(Tenant)
class TenantAdmin(PlatformAuditedAdmin):
    list_display = ("name", "slug", "plan", "status", "calls_this_month", "trial_ends_at", "owner_email", "created")
    list_filter = ("status", "plan")
    search_fields = ("name", "slug", "owner_email", "domains__domain")
    inlines = (DomainInline,)
    fields = (
        "name",
        "plan",
        "slug",
        "schema_name",
        "status",
        "status_reason",
        "trial_ends_at",
        "suspended_at",
        "owner_email",
        *QUOTA_OVERRIDE_FIELDS,
        "usage_this_month",
        "created_at",
        "updated_at",
    )
    readonly_fields = (
        "usage_this_month",
        "slug",
        "schema_name",
        "status",
        "status_reason",
        "trial_ends_at",
        "suspended_at",
        "owner_email",
        "created_at",
        "updated_at",
    )
    actions = ("suspend_selected", "reactivate_selected")
    change_list_template = "admin/tenants/tenant/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        return super().get_queryset(request).exclude(schema_name="public").select_related("plan")

    # New tenants are provisioned (schema, domain, admin) by the provisioning
    # service through the form below, never by saving a bare row.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Tenant, form: Any, change: bool) -> None:
        tenant_update(
            tenant=obj,
            actor=request_actor(request, label="admin"),
            name=form.cleaned_data["name"],
            plan=form.cleaned_data["plan"],
            overrides={field: form.cleaned_data[field] for field in QUOTA_OVERRIDE_FIELDS},
        )

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)
        # One Redis round trip per page, and one statement for the counters missing there.
        self._month_calls = usage_by_tenant(list(changelist.result_list))
        return changelist

    @admin.display(description=_("created at"), ordering="created_at")
    def created(self, tenant: Tenant) -> Any:
        return tenant.created_at  # TimeStampedModel's field has no translated name

    @admin.display(description=_("API calls this month"))
    def calls_this_month(self, tenant: Tenant) -> str:
        calls = getattr(self, "_month_calls", {}).get(tenant.pk)
        limit = limits_for(tenant).api_calls
        shown = "—" if calls is None else f"{calls:,}"
        return f"{shown} / {limit:,}" if limit is not None else f"{shown} / ∞"

    @admin.display(description=_("Usage this month"))
    def usage_this_month(self, tenant: Tenant) -> str:
        if tenant.pk is None:
            return "—"
        with schema_context(tenant.schema_name):
            quotas = quota_status(tenant)
        return format_html_join(
            mark_safe("<br>"),
            "{}: {} / {}",
            (
                (_quota_label(q["quota"]), _amount(q["quota"], q["used"]), _amount(q["quota"], q["limit"]))
                for q in quotas
            ),
        )

    def get_urls(self) -> list[URLPattern]:
        provision = path("provision/", self.admin_site.admin_view(self.provision_view), name="tenants_tenant_provision")
        return [provision, *super().get_urls()]

    def provision_view(self, request: HttpRequest) -> HttpResponse:
        form = ProvisionForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                result = tenant_provision(**form.cleaned_data, actor=request_actor(request, label="admin"))
            except InvalidInput as exc:
                put_on_form(form, exc)
            else:
                self.message_user(
                    request,
                    _("Provisioned %(url)s. Admin %(email)s, one-time password: %(password)s")
                    % {"url": result.tenant.url, "email": result.admin.email, "password": result.generated_password},
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:tenants_tenant_change", args=[result.tenant.pk]))
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "title": _("Provision a tenant"),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/tenants/tenant/provision.html", context)

    @admin.action(description=_("Suspend the selected tenants"))
    def suspend_selected(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._apply(request, queryset, lambda t: tenant_suspend(tenant=t, actor=request_actor(request, label="admin")))

    @admin.action(description=_("Reactivate the selected tenants"))
    def reactivate_selected(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._apply(
            request, queryset, lambda t: tenant_reactivate(tenant=t, actor=request_actor(request, label="admin"))
        )

    def _apply(self, request: HttpRequest, queryset: QuerySet[Tenant], action: Any) -> None:
        done = 0
        for tenant in queryset:
            try:
                action(tenant)
                done += 1
            except ApplicationError as exc:
                self.message_user(request, f"{tenant.slug}: {exc.message}", messages.WARNING)
        if done:
            self.message_user(request, _("%(count)d tenants updated.") % {"count": done}, messages.SUCCESS)


def _quota_label(quota: str) -> str:
    return str(Quota(quota).label)


def _amount(quota: str, value: int | None) -> str:
    if value is None:
        return "∞"
    return megabytes(value) if quota == Quota.STORAGE else f"{value:,}"  # MB, as the plans state it


@admin.register(PlatformAuditEvent)
class PlatformAuditEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "actor_label", "action", "tenant_schema", "target_type", "target_id", "ip")
    list_filter = ("action",)
    search_fields = ("actor_label", "tenant_schema", "target_id")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: PlatformAuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: PlatformAuditEvent | None = None) -> bool:
        return False
