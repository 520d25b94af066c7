"""OpenAPI for the tenant API (drf-spectacular): auth schemes, component names and the error responses."""

from __future__ import annotations

from typing import Any

from drf_spectacular.authentication import SessionScheme
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


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


class StrictSerializerScheme(OpenApiSerializerExtension):
    """A ``StrictSerializer`` answers 400 for fields it does not know: its request schema says so."""

    target_class = "apps.api.base.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> Any:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if direction == "request":
            schema["additionalProperties"] = False
        return schema


class OperationAutoSchema(AutoSchema):
    """Names nested serializers after their operation (``UserCreateApi.InputSerializer`` -> ``UserCreateInput``)
    and lists the errors each operation can answer, in the one error format."""

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        # drf-spectacular's own method (0.30, pinned): it has no public hook that adds responses to every
        # operation by what its view is; tests/api/test_openapi.py fails if this stops taking effect.
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for code, error in self._errors().items():
            responses.setdefault(code, self._get_response_for_code(error, code, direction=direction))
        return responses

    def _errors(self) -> dict[str, OpenApiResponse]:
        """The error statuses of this operation; one the view declares itself (``extend_schema``) is kept."""
        view = self.view
        errors: dict[str, OpenApiResponse] = {}
        if self.method != "GET" or self.get_override_parameters():  # input, or a business rule that says no
            errors["400"] = INVALID_INPUT
        if "{" in self.path:
            errors["404"] = NOT_FOUND
        if self.method == "GET" and self._is_list_view():  # paged (TenantApi.paginate)
            errors.setdefault("400", PAGE_OUT_OF_RANGE)
            errors["404"] = NOT_FOUND_OR_PAST_THE_END if "{" in self.path else PAST_THE_END
        if not getattr(view, "dangerously_allow_anonymous", True):  # a TenantApi that needs a credential
            errors["401"] = UNAUTHENTICATED
            errors["403"] = FORBIDDEN
            errors["429"] = RATE_LIMITED  # the workspace's rate limit counts every authenticated request
        if getattr(view, "metered", False):
            errors.update({"402": QUOTA_EXCEEDED, "502": UPSTREAM_ERROR, "503": METERING_UNAVAILABLE})
        return errors

    def get_serializer_name(self, serializer: Any, direction: Any) -> str:
        name = str(super().get_serializer_name(serializer, direction))
        owner, _dot, _rest = type(serializer).__qualname__.rpartition(".")
        if owner:
            return owner.split(".")[-1].removesuffix("Api") + name
        return name


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable and machine-readable, e.g. `invalid_input` or `quota_exceeded`.")
    message = serializers.CharField(help_text="For people, in the request's language.")
    details = serializers.DictField(
        help_text="Per code: the fields and their messages for `invalid_input`; quota, limit, used and resets_at "
        "for `quota_exceeded`; retry_after (seconds) for `rate_limited`."
    )


class ErrorSerializer(serializers.Serializer):
    """Every API error: ``{"error": {"code", "message", "details"}}`` (apps.core.exceptions)."""

    error = ErrorDetailSerializer()


def error_response(description: str) -> OpenApiResponse:
    """An error response for ``extend_schema(responses=...)``: the error format, with what it means here."""
    return OpenApiResponse(response=ErrorSerializer, description=description)


def quota_exceeded(quota: str) -> OpenApiResponse:
    """The 402 of an operation that counts against the plan's ``quota`` (``users``, ``mcp_services``, ``storage``)."""
    return error_response(f"`quota_exceeded`: the plan's limit of {quota.replace('_', ' ')} is reached "
                          f"(`details.quota` is `{quota}`).")  # fmt: skip


# Added to every operation they apply to (OperationAutoSchema); endpoints that log in declare their own.
INVALID_INPUT = error_response(
    "`invalid_input` (or a more specific code): `details` names each field and its messages."
)
PAGE_OUT_OF_RANGE = error_response("`invalid_input`: `page` below 1, or `page_size` outside 1 to 100.")
PAST_THE_END = error_response("`not_found`: a `page` past the last one.")
NOT_FOUND_OR_PAST_THE_END = error_response("`not_found`: no such resource here, or a `page` past the last one.")
UNAUTHENTICATED = error_response(
    "`not_authenticated`: no credential, or a bad, expired or revoked one; `token_tenant_mismatch`: a JWT of another "
    "workspace."
)
FORBIDDEN = error_response(
    "`permission_denied`: the role (or the API key's role) lacks the permission named in `details.permission`; "
    "`member_required`: an API key on an endpoint about a person; `tenant_suspended`: the workspace is suspended."
)
NOT_FOUND = error_response("`not_found`: missing, or not yours to see (the same answer either way).")
RATE_LIMITED = error_response("`rate_limited`: the workspace's requests per minute are used up, or this address is "
                              "locked out after failed API keys; wait `Retry-After` seconds.")  # fmt: skip
QUOTA_EXCEEDED = error_response(
    "`quota_exceeded`: the plan's monthly AI calls or storage, or the spending cap, are used up."
)
UPSTREAM_ERROR = error_response("`upstream_error`: the model server failed.")
METERING_UNAVAILABLE = error_response(
    "`metering_unavailable`: usage cannot be checked for a moment (Redis); retry after `Retry-After`."
)
