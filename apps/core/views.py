"""Error pages: JSON under /api/ and /v1/, HTML elsewhere."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from apps.core.exceptions import json_error

API_PREFIXES = ("/api/", "/v1/")


def is_api_request(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIXES) or request.path in ("/api", "/v1")


def error_page(request: HttpRequest, *, status: int, title: str, message: str) -> HttpResponse:
    return render(request, "errors/error.html", {"status": status, "title": title, "message": message}, status=status)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return json_error("not_found", _("Not found."), status=404)
    return error_page(request, status=404, title=_("Page not found"), message=_("There is nothing at this address."))


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return json_error("permission_denied", _("You do not have permission to do this."), status=403)
    return error_page(
        request, status=403, title=_("Forbidden"), message=_("You do not have permission to see this page.")
    )


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return json_error("invalid_input", _("The request is not valid."), status=400)
    return error_page(request, status=400, title=_("Bad request"), message=_("The request is not valid."))


def server_error(request: HttpRequest) -> HttpResponse:
    if is_api_request(request):
        return json_error("server_error", _("Something went wrong on our side. It has been logged."), status=500)
    return error_page(
        request, status=500, title=_("Server error"), message=_("Something went wrong on our side. It has been logged.")
    )


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    if is_api_request(request):
        return json_error("csrf_failed", _("The CSRF check failed. Reload the page and try again."), status=403)
    return error_page(
        request, status=403, title=_("Form expired"), message=_("The CSRF check failed. Reload the page and try again.")
    )
