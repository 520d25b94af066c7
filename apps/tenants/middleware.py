from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.http.request import split_domain_port
from django.shortcuts import render
from django.utils import translation
from django.utils.translation import gettext as _
from django_tenants.middleware.main import TenantMainMiddleware
from django_tenants.utils import remove_www

from apps.core.exceptions import json_error
from apps.core.views import is_api_request
from apps.tenants.models import Domain, Tenant, TenantStatus
from apps.tenants.routing import tenant_for_hostname


class TenantRoutingMiddleware(TenantMainMiddleware):
    """Routes each request to its tenant's schema by host name.

    The lookup is cached (apps.tenants.routing). An unknown host gets 404 and
    never the public schema; a suspended or cancelled tenant gets 403.
    """

    @staticmethod
    def hostname_from_request(request: HttpRequest) -> str:
        """The host without its port, lowercased and without a trailing dot, as DNS names compare (django-tenants
        takes it as sent, so ``DEMO.example.com`` found no workspace); then without ``www.``, as django-tenants."""
        hostname, _port = split_domain_port(request.get_host())
        return remove_www(hostname)

    def get_tenant(self, domain_model: type[Domain], hostname: str) -> Tenant:
        tenant = tenant_for_hostname(hostname)
        if tenant is None:
            raise domain_model.DoesNotExist(hostname)
        return tenant

    def no_tenant_found(self, request: HttpRequest, hostname: str) -> HttpResponse:
        with translation.override(translation.get_language_from_request(request)):
            if is_api_request(request):
                return json_error(
                    "not_found", _("No workspace is served at this address."), status=404, request=request
                )
            return render(
                request,
                "errors/unknown_host.html",
                {"hostname": hostname, "status": 404, "title": _("Workspace not found")},
                status=404,
            )

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        response = super().process_request(request)
        if response is not None:
            return response
        tenant: Tenant = request.tenant  # type: ignore[attr-defined]
        if tenant.is_blocked:
            return self.blocked_response(request, tenant)
        return None

    @staticmethod
    def blocked_response(request: HttpRequest, tenant: Tenant) -> HttpResponse:
        with translation.override(translation.get_language_from_request(request)):
            if tenant.status == TenantStatus.SUSPENDED:
                code, message = "tenant_suspended", _("This workspace is suspended. Contact its administrator.")
            else:
                code, message = "tenant_cancelled", _("This workspace has been cancelled.")
            if is_api_request(request):
                return json_error(code, message, status=403, request=request)
            return render(
                request,
                "errors/error.html",
                {"status": 403, "title": _("Workspace unavailable"), "message": message, "code": code},
                status=403,
            )
