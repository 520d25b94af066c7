from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.permissions import Perm
from apps.api.base import StrictSerializer, TenantApi
from apps.api.fields import BoundedListField, JsonBooleanField
from apps.api.schema import error_response
from apps.llm.client import check_model_server, provider_server
from apps.llm.models import AssistantSettings, ModelProvider
from apps.llm.services import assistant_instructions_set, model_provider_delete, model_provider_save


class ModelProviderOutput(serializers.ModelSerializer):
    has_api_key = serializers.BooleanField()

    class Meta:
        model = ModelProvider
        fields = ("name", "base_url", "model_ids", "is_active", "has_api_key", "updated_at")
        read_only_fields = fields


NO_PROVIDER = error_response("`not_found`: the workspace has no model server of its own; it uses the platform's.")


class ModelProviderDetailApi(TenantApi):
    """GET /api/model-provider: the tenant's own model server; 404 while it uses the platform's.

    The API key is never returned, only whether one is stored.
    """

    required_permission = Perm.MANAGE_SERVICES

    @extend_schema(responses={200: ModelProviderOutput, 404: NO_PROVIDER})
    def get(self, request: Request) -> Response:
        provider = ModelProvider.objects.first()
        if provider is None:
            raise Http404
        return Response(ModelProviderOutput(provider).data)


class ModelProviderSaveApi(TenantApi):
    """PUT /api/model-provider: ``base_url``, ``model_ids`` (the first is the default), ``api_key``, ``is_active``.

    Leave ``api_key`` out to keep the stored key; send "" to remove it.
    """

    required_permission = Perm.MANAGE_SERVICES

    class InputSerializer(StrictSerializer):
        name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
        base_url = serializers.CharField(max_length=500)
        model_ids = BoundedListField(child=serializers.CharField(max_length=100), max_length=50)
        api_key = serializers.CharField(required=False, allow_blank=True, max_length=1000, default=None)
        is_active = JsonBooleanField(required=False, default=True)

    @extend_schema(request=InputSerializer, responses={200: ModelProviderOutput})
    def put(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        provider = model_provider_save(actor=self.actor(request), **data.validated_data)
        return Response(ModelProviderOutput(provider).data)


class ModelProviderDeleteApi(TenantApi):
    """DELETE /api/model-provider: back to the platform's model server."""

    required_permission = Perm.MANAGE_SERVICES

    @extend_schema(responses={204: None})
    def delete(self, request: Request) -> Response:
        model_provider_delete(actor=self.actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ModelProviderTestApi(TenantApi):
    """POST /api/model-provider/test: ask the workspace's own model server for its models, with the stored key.

    400 ``model_server_unreachable`` when it cannot be reached, refuses the key or is not
    OpenAI-compatible; ``missing`` lists the workspace's models that it does not offer.
    404 while the workspace uses the platform's server.
    """

    required_permission = Perm.MANAGE_SERVICES

    class OutputSerializer(serializers.Serializer):
        offered = serializers.ListField(child=serializers.CharField())
        missing = serializers.ListField(child=serializers.CharField())

    @extend_schema(request=None, responses={200: OutputSerializer, 404: NO_PROVIDER})
    def post(self, request: Request) -> Response:
        provider = ModelProvider.objects.first()
        if provider is None:
            raise Http404
        check = check_model_server(provider_server(provider))
        return Response(self.OutputSerializer({"offered": check.offered, "missing": check.missing}).data)


class AssistantSettingsOutput(serializers.ModelSerializer):
    class Meta:
        model = AssistantSettings
        fields = ("instructions", "updated_at")
        read_only_fields = fields


class AssistantInstructionsApi(TenantApi):
    """GET /api/assistant: the admins' instructions to the model in every chat turn ("" when none)."""

    required_permission = Perm.MANAGE_SERVICES

    @extend_schema(responses={200: AssistantSettingsOutput})
    def get(self, request: Request) -> Response:
        # Never saved: "" and no updated_at.
        return Response(AssistantSettingsOutput(AssistantSettings.objects.first() or AssistantSettings()).data)


class AssistantInstructionsSaveApi(TenantApi):
    """PUT /api/assistant: ``{instructions}``, at most 4,000 characters; "" removes them. The next turn uses them."""

    required_permission = Perm.MANAGE_SERVICES

    class InputSerializer(StrictSerializer):
        instructions = serializers.CharField(allow_blank=True, trim_whitespace=False)

    @extend_schema(request=InputSerializer, responses={200: AssistantSettingsOutput})
    def put(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        row = assistant_instructions_set(actor=self.actor(request), instructions=data.validated_data["instructions"])
        return Response(AssistantSettingsOutput(row).data)
