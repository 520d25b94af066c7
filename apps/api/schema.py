"""OpenAPI for the tenant API (drf-spectacular): auth schemes and component names."""

from __future__ import annotations

from typing import Any

from drf_spectacular.authentication import SessionScheme
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "apps.api.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": (
                "An API key of this workspace (`hn_...`), created by an admin. "
                "`Authorization: Bearer hn_...` works too. It acts with the key's role."
            ),
        }


class TenantJWTScheme(SimpleJWTScheme):
    target_class = "apps.api.authentication.TenantJWTAuthentication"


class TenantSessionScheme(SessionScheme):
    target_class = "apps.api.authentication.TenantSessionAuthentication"


class OperationAutoSchema(AutoSchema):
    """Names nested serializers after their operation: ``UserCreateApi.InputSerializer`` -> ``UserCreateInput``."""

    def get_serializer_name(self, serializer: Any, direction: Any) -> str:
        name = str(super().get_serializer_name(serializer, direction))
        owner, _dot, _rest = type(serializer).__qualname__.rpartition(".")
        if owner:
            return owner.split(".")[-1].removesuffix("Api") + name
        return name
