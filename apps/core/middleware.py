from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from apps.core.health import readiness


class HealthCheckMiddleware:
    """Answers /healthz and /readyz for any host, before tenant routing."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/healthz":
            return JsonResponse({"status": "ok"})
        if request.path == "/readyz":
            ready, checks = readiness()
            return JsonResponse(
                {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
            )
        return self.get_response(request)


class ContentSecurityPolicyMiddleware:
    """Sends ``settings.CONTENT_SECURITY_POLICY`` with every response that does not set its own.

    The pages show what strangers wrote: model replies (Markdown, sanitized by nh3), tool arguments and results,
    an MCP server's tool names and descriptions and its error messages. Each is escaped or sanitized where it is
    shown; the policy is the second line of defence should one of them slip through: no script but our own
    files (no inline script, no event handler attribute, no ``javascript:`` URL), nothing loaded from another
    origin (an image in a reply would carry the conversation to a stranger's server), no plugin, no ``<base>``,
    and no framing.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        policy = getattr(settings, "CONTENT_SECURITY_POLICY", "")
        if policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy
        return response
