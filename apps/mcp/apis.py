"""The MCP services API: members who use services see them; admins who manage them change them."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.permissions import Perm, role_has
from apps.accounts.services import actor_role
from apps.api.base import PageOnlyQuery, StrictSerializer, TenantApi
from apps.api.fields import BoundedListField, JsonIntegerField
from apps.api.schema import error_response, quota_exceeded
from apps.mcp import services
from apps.mcp.models import McpService, Transport
from apps.mcp.selectors import access_mcp_service, mcp_service_list
from apps.mcp.tool_names import MAX_TOOLS_PER_SERVICE


class McpToolOutput(serializers.Serializer):
    """A tool of the loaded list: ``name`` is the server's (what ``disabled_tools`` names), ``exposed_name`` the
    model's (``<slug>__<name>``, cleaned up, with a suffix where cleaning made two tools' names the same)."""

    name = serializers.CharField()
    exposed_name = serializers.CharField()
    description = serializers.CharField()
    input_schema = serializers.JSONField()


class McpServiceOutput(serializers.ModelSerializer):
    """A service; its ``url`` whole for those who manage services (``context["can_manage"]``), else only its
    scheme, host and port (``McpService.url_origin``: the rest may hold the provider's key)."""

    url = serializers.SerializerMethodField(
        help_text="The whole URL for members with `manage_services`; for others its scheme, host and port only."
    )
    timeout_seconds = serializers.IntegerField()
    has_secret_headers = serializers.BooleanField()
    tools = McpToolOutput(many=True, source="exposed_tools")
    disabled_tools = serializers.ListField(child=serializers.CharField())
    last_error = serializers.CharField(source="last_error_text", help_text="The last test's error, in the request's "
                                       "language.")  # fmt: skip

    class Meta:
        model = McpService
        fields: tuple[str, ...] = (
            "id", "name", "slug", "url", "type", "timeout_seconds", "has_secret_headers", "is_active", "tools",
            "disabled_tools", "tools_refreshed_at", "last_error", "created_at", "updated_at",
        )  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(serializers.CharField())
    def get_url(self, service: McpService) -> str:
        return service.url if self.context.get("can_manage") else service.url_origin


def _can_manage(api: TenantApi, request: Request) -> dict[str, bool]:
    """The serializer context of an answer to those who may only use services, or may manage them too."""
    return {"can_manage": role_has(actor_role(api.actor(request)) or "", Perm.MANAGE_SERVICES)}


class _ServiceInput(StrictSerializer):
    name = serializers.CharField(max_length=100)
    url = serializers.CharField(max_length=500)
    type = serializers.ChoiceField(choices=Transport.choices, default=Transport.STREAMABLE_HTTP)
    timeout_seconds = JsonIntegerField(required=False, allow_null=True, default=None)
    headers = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, default=dict)


class McpServiceListApi(TenantApi):
    """GET /api/mcp-services."""

    required_permission = Perm.USE_MCP_SERVICES
    query = PageOnlyQuery

    @extend_schema(responses={200: McpServiceOutput(many=True)})
    def get(self, request: Request) -> Response:
        return self.paginate(request, mcp_service_list(), McpServiceOutput, lambda _page: _can_manage(self, request))


class McpServiceCreateApi(TenantApi):
    """POST /api/mcp-services: the URL passes the SSRF guard; active services count against the plan (402)."""

    required_permission = Perm.MANAGE_SERVICES

    class InputSerializer(_ServiceInput):
        slug = serializers.CharField(max_length=30, required=False, allow_null=True, default=None)

    @extend_schema(request=InputSerializer, responses={201: McpServiceOutput, 402: quota_exceeded("mcp_services")})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        service = services.mcp_service_create(actor=self.actor(request), **data.validated_data)
        return Response(McpServiceOutput(service, context={"can_manage": True}).data, status=status.HTTP_201_CREATED)


class McpServiceDetailApi(TenantApi):
    """GET /api/mcp-services/{id}."""

    required_permission = Perm.USE_MCP_SERVICES

    @extend_schema(responses={200: McpServiceOutput})
    def get(self, request: Request, service_id: int) -> Response:
        service = access_mcp_service(self.actor(request), service_id)
        return Response(McpServiceOutput(service, context=_can_manage(self, request)).data)


class McpServiceUpdateApi(TenantApi):
    """PATCH /api/mcp-services/{id}: any of name, url, type, timeout_seconds, headers, disabled_tools; not the slug.

    ``disabled_tools`` names tools of the loaded list that are not offered to the model; ``[]`` offers all.
    ``timeout_seconds: null`` is the default, as on create.
    """

    required_permission = Perm.MANAGE_SERVICES

    class InputSerializer(StrictSerializer):
        name = serializers.CharField(max_length=100, required=False)
        url = serializers.CharField(max_length=500, required=False)
        type = serializers.ChoiceField(choices=Transport.choices, required=False)
        timeout_seconds = JsonIntegerField(required=False, allow_null=True)
        headers = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False)
        disabled_tools = BoundedListField(
            child=serializers.CharField(max_length=200), max_length=MAX_TOOLS_PER_SERVICE, required=False
        )

    @extend_schema(request=InputSerializer, responses={200: McpServiceOutput})
    def patch(self, request: Request, service_id: int) -> Response:
        actor = self.actor(request)
        service = access_mcp_service(actor, service_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        if "timeout_seconds" in fields and fields["timeout_seconds"] is None:  # null, not left out
            fields["timeout_seconds"] = services.DEFAULT
        service = services.mcp_service_update(actor=actor, service=service, **fields)
        return Response(McpServiceOutput(service, context={"can_manage": True}).data)


class McpServiceDeleteApi(TenantApi):
    """DELETE /api/mcp-services/{id}."""

    required_permission = Perm.MANAGE_SERVICES

    @extend_schema(responses={204: None})
    def delete(self, request: Request, service_id: int) -> Response:
        actor = self.actor(request)
        services.mcp_service_delete(actor=actor, service=access_mcp_service(actor, service_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class _McpServiceSetActiveApi(TenantApi):
    required_permission = Perm.MANAGE_SERVICES
    active: bool

    @extend_schema(request=None, responses={200: McpServiceOutput})
    def post(self, request: Request, service_id: int) -> Response:
        actor = self.actor(request)
        service = access_mcp_service(actor, service_id)
        service = services.mcp_service_set_active(actor=actor, service=service, active=self.active)
        return Response(McpServiceOutput(service, context={"can_manage": True}).data)


@extend_schema_view(
    post=extend_schema(request=None, responses={200: McpServiceOutput, 402: quota_exceeded("mcp_services")})
)
class McpServiceEnableApi(_McpServiceSetActiveApi):
    """POST /api/mcp-services/{id}/enable: counts against the plan's MCP-service limit (402)."""

    active = True


class McpServiceDisableApi(_McpServiceSetActiveApi):
    """POST /api/mcp-services/{id}/disable."""

    active = False


class McpUnusableToolOutput(serializers.Serializer):
    """A tool a test left out: its input schema is not a valid JSON Schema of an object."""

    name = serializers.CharField()
    problem = serializers.CharField(help_text="What is wrong with its input schema, in JSON Schema's words.")


class McpServiceTestApi(TenantApi):
    """POST /api/mcp-services/{id}/test: connect, list the tools, and cache them (400 if it is not MCP).

    ``more_tools`` is true when the server lists more tools than are loaded (the first 500, of at most
    MCP_MAX_TOOL_LIST_BYTES in all, are). ``unusable_tools``: the tools left out because their input schema is
    not a valid JSON Schema of an object, each with what is wrong with it.
    409 ``service_changed`` when the URL or transport changed while it was tested: nothing is stored.
    """

    required_permission = Perm.MANAGE_SERVICES

    class OutputSerializer(McpServiceOutput):
        more_tools = serializers.SerializerMethodField()
        unusable_tools = serializers.SerializerMethodField()

        class Meta(McpServiceOutput.Meta):
            fields = (*McpServiceOutput.Meta.fields, "more_tools", "unusable_tools")
            read_only_fields = fields

        def get_more_tools(self, service: McpService) -> bool:
            return bool(self.context["listing"].more)

        @extend_schema_field(McpUnusableToolOutput(many=True))
        def get_unusable_tools(self, service: McpService) -> list[dict[str, str]]:
            return [{"name": name, "problem": problem} for name, problem in self.context["listing"].unusable]

    @extend_schema(
        request=None,
        responses={
            200: OutputSerializer,
            409: error_response("`service_changed`: the URL or transport changed during the test; nothing is stored."),
        },
    )
    def post(self, request: Request, service_id: int) -> Response:
        actor = self.actor(request)
        service = access_mcp_service(actor, service_id)
        listing = services.mcp_service_test(actor=actor, service=service)
        service = access_mcp_service(actor, service_id)
        return Response(self.OutputSerializer(service, context={"listing": listing}).data)
