from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.actors import request_actor
from apps.core.ratelimits import enforce_rate_limit
from apps.plans.selectors import plan_list_public
from apps.tenants.services import tenant_provision
from apps.tenants.slugs import SLUG_MAX_LENGTH


class PublicApi(APIView):
    """Base for the unauthenticated API on the platform host."""

    authentication_classes = ()
    permission_classes = (AllowAny,)


class SignupApi(PublicApi):
    """POST /api/public/signup: create an organisation's workspace."""

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        slug = serializers.CharField(max_length=SLUG_MAX_LENGTH)
        admin_email = serializers.EmailField()
        admin_password = serializers.CharField(trim_whitespace=False, max_length=256)
        plan = serializers.CharField(max_length=32, required=False, default="free")

    class OutputSerializer(serializers.Serializer):
        name = serializers.CharField()
        slug = serializers.CharField()
        plan = serializers.CharField(source="plan.code")
        status = serializers.CharField()
        trial_ends_at = serializers.DateTimeField(allow_null=True)
        url = serializers.CharField()
        login_url = serializers.SerializerMethodField()
        admin_email = serializers.EmailField(source="owner_email")

        def get_login_url(self, tenant: object) -> str:
            return f"{tenant.url}login/"  # type: ignore[attr-defined]

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request: Request) -> Response:
        enforce_rate_limit(request, group="signup", key="ip", rate=settings.SIGNUP_RATE_LIMIT, fail_open=True)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = tenant_provision(
            **serializer.validated_data,
            actor=request_actor(request, label="signup"),
            self_serve_only=True,
        )
        return Response(self.OutputSerializer(result.tenant).data, status=status.HTTP_201_CREATED)


class PlanListApi(PublicApi):
    """GET /api/public/plans: the pricing table. Limits of null mean unlimited."""

    class OutputSerializer(serializers.Serializer):
        code = serializers.CharField()
        name = serializers.CharField(source="display_name")
        price_fen_per_month = serializers.IntegerField(allow_null=True)
        api_calls_per_month = serializers.IntegerField(allow_null=True)
        storage_mb = serializers.IntegerField(allow_null=True)
        max_users = serializers.IntegerField(allow_null=True)
        max_mcp_services = serializers.IntegerField(allow_null=True)
        rate_limit_per_minute = serializers.IntegerField()
        overage_fen_per_1000_calls = serializers.IntegerField(allow_null=True)
        overage_fen_per_gb_month = serializers.IntegerField(allow_null=True)
        hard_stop = serializers.BooleanField()
        self_serve = serializers.BooleanField()

    @extend_schema(responses={200: OutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        return Response({"results": self.OutputSerializer(plan_list_public(), many=True).data})
