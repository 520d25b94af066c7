"""Cross-origin calls to /v1 (CORS), for the browser apps built on OpenAI's API.

/v1 takes API keys only, sent in the ``Authorization`` header by the caller's own code, never cookies: a page of
another origin can do nothing with it that it could not do from any other program holding the key. So any origin
may call it, without credentials (``Access-Control-Allow-Origin: *``, never ``Allow-Credentials``), and a
preflight is answered here, before the workspace's routing and authentication: the browser sends it without the
key, and the answer to it grants nothing (the request that follows is authenticated as any other). The rest of
the tenant API, which a login's session cookie authenticates, stays same-origin.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

PREFIX = "/v1/"
ALLOWED_METHODS = "GET, HEAD, POST, OPTIONS"
# What a page may read of an answer besides the CORS-safelisted headers: the rate limit, when to retry, whether
# to, and the request's id (openai's clients read the last three).
EXPOSED_HEADERS = (
    "X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After, x-should-retry, X-Request-ID"
)
MAX_AGE_SECONDS = 7200  # Chrome's most
# A preflight's Access-Control-Request-Headers are echoed (openai's JavaScript client sends x-stainless-*
# headers of its own); the longest kept, as a header of many kilobytes is no client's.
_MOST_REQUESTED_HEADERS = 2000
_HEADER_NAMES = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~, -]*")


class OpenAiCorsMiddleware:
    """Answers a preflight for /v1 itself (204), and marks every answer under /v1, errors and streams alike,
    readable by any origin."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not request.path.startswith(PREFIX):
            return self.get_response(request)
        if request.method == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in request.META:
            response: HttpResponseBase = HttpResponse(status=204)
            response["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            requested = request.META.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "")[:_MOST_REQUESTED_HEADERS]
            if requested and _HEADER_NAMES.fullmatch(requested):
                response["Access-Control-Allow-Headers"] = requested
            response["Access-Control-Max-Age"] = str(MAX_AGE_SECONDS)
            del response["Content-Type"]  # it has no body
        else:
            response = self.get_response(request)
            response["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        response["Access-Control-Allow-Origin"] = "*"
        return response
