"""Every operation of the tenant API, found from the URL conf (never listed by hand)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver

from apps.api.base import TenantApi

METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    view: type[TenantApi]

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def anonymous(self) -> bool:
        return bool(self.view.dangerously_allow_anonymous)


def _concrete(route: str) -> str:
    """``users/<int:user_id>`` -> ``users/999999``: an id that exists nowhere."""
    return re.sub(r"<(?:\w+:)?\w+>", "999999", route)


def _walk(patterns: list[Any], prefix: str) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for pattern in patterns:
        route = str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            found += _walk(pattern.url_patterns, prefix + route)
        elif isinstance(pattern, URLPattern):
            found.append((prefix + route, pattern.callback))
    return found


def tenant_api_endpoints() -> list[Endpoint]:
    endpoints = []
    for route, callback in _walk(get_resolver("config.urls_tenant").url_patterns, "/"):
        cls = getattr(callback, "cls", None)
        operations = getattr(cls, "operation_classes", None)
        if operations:
            pairs = [(method.lower(), view) for method, view in operations.items()]
        elif cls is not None and issubclass(cls, TenantApi):
            pairs = [(method, cls) for method in METHODS if hasattr(cls, method)]
        else:
            continue
        endpoints += [Endpoint(method.upper(), _concrete(route), view) for method, view in pairs]
    assert endpoints, "no tenant API endpoints found"
    return endpoints
