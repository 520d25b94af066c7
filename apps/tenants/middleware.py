from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse
from django.http.request import split_domain_port
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.utils import translation
from django.utils.translation import gettext as _
from django_tenants.middleware.main import TenantMainMiddleware
from django_tenants.utils import get_public_schema_name, remove_www

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
        try:
            host = request.get_host()
        except DisallowedHost:
            return ""  # a malformed Host: the unknown host's 404 (django-tenants answered an empty one)
        hostname, _port = split_domain_port(host)
        return remove_www(hostname)

    def get_tenant(self, domain_model: type[Domain], hostname: str) -> Tenant:
        tenant = tenant_for_hostname(hostname) if hostname else None
        if tenant is None:
            raise domain_model.DoesNotExist(hostname)
        return tenant

    def no_tenant_found(self, request: HttpRequest, hostname: str) -> HttpResponse:
        hostname = hostname or request.META.get("HTTP_HOST", "")[:255]  # a malformed one, as it came
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


# Requests a workspace may have in progress whatever the others hold (TenantShareMiddleware's reserve).
SMALL_SHARE = 2


class TenantShareMiddleware:
    """At most ``TENANT_MAX_IN_FLIGHT`` requests of one tenant in a web process at once; more get 429.

    A web process serves requests in a fixed number of threads (``WEB_THREADS``), and a streamed
    reply holds its thread to the end: one workspace opening long streams (or whose own model
    server answers a token a minute) could otherwise take every thread, and every other
    workspace's requests would wait behind them. The default is half the threads, so the other
    half is always there for the others. And as two busy workspaces could take both halves
    together, a workspace already holding ``SMALL_SHARE`` requests takes another only while more
    than ``TENANT_RESERVED_THREADS`` of the ``WEB_THREADS`` are free: those are kept for the
    workspaces with fewer in progress. A stream holds its place until the web server closes
    the response. Refused before anything else runs, a request so refused is not counted
    against the rate limit; it gets ``Retry-After: 1``. Per process, in memory: no round trip.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.limit: int = settings.TENANT_MAX_IN_FLIGHT
        self.open_to_all = settings.WEB_THREADS - settings.TENANT_RESERVED_THREADS  # places past a small share
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        self._total = 0

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        tenant = getattr(request, "tenant", None)
        schema = getattr(tenant, "schema_name", None)
        if not self.limit or schema is None or schema == get_public_schema_name():
            return self.get_response(request)
        with self._lock:
            held = self._in_flight.get(schema, 0)
            if held >= self.limit or (held >= SMALL_SHARE and self._total >= self.open_to_all):
                return self.busy_response(request, held)
            self._in_flight[schema] = held + 1
            self._total += 1
        release = _Release(self, schema)
        try:
            response = self.get_response(request)
        except BaseException:
            release()
            raise
        if response.streaming:
            response.streaming_content = _Held(response.streaming_content, release)  # type: ignore[attr-defined]
        else:
            release()
        return response

    def release(self, schema: str) -> None:
        with self._lock:
            self._total -= 1
            left = self._in_flight.get(schema, 0) - 1
            if left > 0:
                self._in_flight[schema] = left
            else:
                self._in_flight.pop(schema, None)

    def busy_response(self, request: HttpRequest, held: int) -> HttpResponse:
        with translation.override(translation.get_language_from_request(request)):
            message = _("Too many of this workspace's requests are in progress at once. Try again in a moment.")
            if is_api_request(request):
                details = {"retry_after": 1, "in_progress": held}
                return json_error("rate_limited", message, status=429, details=details, headers={"Retry-After": "1"},
                                  request=request)  # fmt: skip
            context = {"status": 429, "title": _("Too many requests"), "message": message, "code": "rate_limited"}
            response = render(request, "errors/error.html", context, status=429)
            response["Retry-After"] = "1"
            return response


class _Release:
    """Gives a request's place back, once."""

    def __init__(self, share: TenantShareMiddleware, schema: str) -> None:
        self.share, self.schema, self.done = share, schema, False

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self.share.release(self.schema)


class _Held:
    """A streamed body that gives its place back when the web server closes the response: at its end, or when
    the client goes away (a WSGI server calls ``close`` whether or not it read anything)."""

    def __init__(self, content: Iterable[bytes], release: _Release) -> None:
        self._content: Iterator[bytes] = iter(content)
        self._release = release

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self._content)

    def close(self) -> None:
        self._release()
