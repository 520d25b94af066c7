"""The usage API: what was used, and where each quota stands."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import Http404
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.permissions import Perm, role_has
from apps.accounts.services import actor_role
from apps.api.base import AUTHENTICATED, StrictQuery, StrictSerializer, TenantApi
from apps.api.fields import IsoDateField, JsonIntegerField
from apps.api.permissions import PermissionMissing
from apps.api.schema import error_response
from apps.tenants.selectors import tenant_current
from apps.usage import limits as L
from apps.usage.models import Quota
from apps.usage.selectors import quota_status, usage_member_known, usage_series
from apps.usage.services import (
    MAX_MEMBER_DAILY_CALLS,
    MAX_SPENDING_CAP_FEN,
    member_daily_calls_set,
    spending_cap_set,
)

MAX_RANGE_DAYS = 366


class UsageApi(TenantApi):
    """GET /api/usage?from=&to=&group_by=day|user|api_key: calls, tokens and storage over a range of days.

    Members with ``view_stats`` see the whole tenant (and may narrow it with
    ``user``); other members see only their own calls. ``group_by=api_key``, each
    API key's calls, is the tenant's and needs ``view_stats``; it cannot be
    narrowed to a user, as no one's calls are a key's. ``from`` defaults to the
    first of this month, ``to`` to today (UTC), both inclusive, at most 366 days.
    """

    required_permission = AUTHENTICATED

    class FilterSerializer(StrictQuery):
        # "from" is a Python keyword, hence the source mapping.
        from_ = IsoDateField(required=False)
        to = IsoDateField(required=False)
        group_by = serializers.ChoiceField(choices=["day", "user", "api_key"], required=False, default="day")
        user = serializers.IntegerField(required=False, min_value=1)

        def get_fields(self) -> dict[str, Any]:
            fields = super().get_fields()
            fields["from"] = fields.pop("from_")
            return fields

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            today = L.today()
            start = attrs.get("from") or L.period_start(today)
            end = attrs.get("to") or today
            if start > end:
                raise serializers.ValidationError({"from": [_("The range starts after it ends.")]})
            if attrs.get("group_by") == "api_key" and "user" in attrs:
                raise serializers.ValidationError({"user": [_("Calls made with API keys are no member's; "
                                                              "leave out user to group by API key.")]})  # fmt: skip
            if (end - start).days >= MAX_RANGE_DAYS:
                raise serializers.ValidationError({"to": [_("Ask for at most %(days)d days at a time.")
                                                          % {"days": MAX_RANGE_DAYS}]})  # fmt: skip
            return {**attrs, "from": start, "to": end}

    class OutputSerializer(serializers.Serializer):
        start = serializers.DateField(source="from")
        end = serializers.DateField(source="to")
        group_by = serializers.CharField()
        scope = serializers.ChoiceField(choices=["tenant", "user"])
        totals = serializers.DictField()
        series = serializers.ListField(child=serializers.DictField())

    query = FilterSerializer

    @extend_schema(
        parameters=[FilterSerializer],
        responses={
            200: OutputSerializer,
            404: error_response("`not_found`: no member has the id given as `user`, nor had a deleted one any usage."),
        },
    )
    def get(self, request: Request) -> Response:
        data = self.query_data
        actor = self.actor(request)
        everyone = role_has(actor_role(actor) or "", Perm.VIEW_STATS)
        if data["group_by"] == "api_key" and not everyone:
            raise PermissionMissing(Perm.VIEW_STATS)
        if everyone:
            user_id = data.get("user")
        else:  # one's own usage: a person's, so an API key gets member_required
            user_id = self.member(request).pk
            if data.get("user", user_id) != user_id:
                raise PermissionMissing(Perm.VIEW_STATS)  # asked for someone else's
        if user_id is not None and everyone and not usage_member_known(user_id):
            raise Http404
        series = usage_series(start=data["from"], end=data["to"], group_by=data["group_by"], user_id=user_id,
                              only_user=user_id is not None)  # fmt: skip
        totals = {
            "api_calls": sum(row["api_calls"] for row in series),
            "tokens": sum(row["tokens"] for row in series),
        }
        body = {"from": data["from"], "to": data["to"], "group_by": data["group_by"],
                "scope": "tenant" if user_id is None else "user", "totals": totals, "series": series}  # fmt: skip
        return Response(self.OutputSerializer(body).data)


class QuotaEntryOutput(serializers.Serializer):
    """One quota of ``GET /api/quota``."""

    quota = serializers.ChoiceField(choices=Quota.values)
    limit = serializers.IntegerField(allow_null=True, help_text="null: unlimited")
    used = serializers.IntegerField()
    remaining = serializers.IntegerField(allow_null=True)
    percent = serializers.FloatField(allow_null=True)
    resets_at = serializers.DateTimeField(allow_null=True, help_text="UTC; null where the quota does not reset")
    # The API-call quota's entry only:
    overage = serializers.IntegerField(required=False, help_text="api_calls: calls past the quota this month")
    overage_fen = serializers.IntegerField(required=False, help_text="api_calls: what they cost, in fen")
    spending_cap_fen = serializers.IntegerField(required=False, allow_null=True, help_text="api_calls")
    member_daily_calls = serializers.IntegerField(required=False, allow_null=True, help_text="api_calls")
    hard_stop = serializers.BooleanField(required=False, help_text="api_calls: calls stop at the quota")

    def to_representation(self, instance: dict[str, Any]) -> dict[str, Any]:
        # The API-call fields only where they belong (DRF writes a nullable field it cannot find as null).
        return {name: value for name, value in super().to_representation(instance).items() if name in instance}


class QuotaApi(TenantApi):
    """GET /api/quota: for each quota its limit (null: unlimited), used, remaining and resets_at.

    API calls reset at the start of each month (UTC); storage, users and MCP
    services do not reset. Storage is in bytes. The API-call entry also says
    what overage the month has run up, and the spending cap.
    """

    required_permission = Perm.VIEW_STATS

    class OutputSerializer(serializers.Serializer):
        plan = serializers.CharField()
        period_start = serializers.DateField()
        resets_at = serializers.DateTimeField(default_timezone=dt.UTC)
        quotas = QuotaEntryOutput(many=True)

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request) -> Response:
        tenant = tenant_current()
        today = L.today()
        body = {
            "plan": tenant.plan.code if tenant.plan else "",
            "period_start": L.period_start(today),
            "resets_at": L.resets_at(today),
            "quotas": quota_status(tenant),
        }
        return Response(self.OutputSerializer(body).data)


class SpendingCapApi(TenantApi):
    """PUT /api/quota/spending-cap: the month's overage stops at this many fen (null: no cap)."""

    required_permission = Perm.MANAGE_BILLING

    class InputSerializer(StrictSerializer):
        spending_cap_fen = JsonIntegerField(allow_null=True, min_value=0, max_value=MAX_SPENDING_CAP_FEN)

    class OutputSerializer(serializers.Serializer):
        spending_cap_fen = serializers.IntegerField(allow_null=True)

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer})
    def put(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        tenant = spending_cap_set(actor=self.actor(request), cap_fen=data.validated_data["spending_cap_fen"])
        return Response(self.OutputSerializer(tenant).data)


class MemberDailyCallsApi(TenantApi):
    """PUT /api/quota/member-daily-calls: each member may make at most this many AI calls a day, UTC (null: no
    limit). A member past it gets 402 ``quota_exceeded`` with ``details.quota`` ``member_daily_calls``."""

    required_permission = Perm.MANAGE_BILLING

    class InputSerializer(StrictSerializer):
        member_daily_calls = JsonIntegerField(allow_null=True, min_value=1, max_value=MAX_MEMBER_DAILY_CALLS)

    class OutputSerializer(serializers.Serializer):
        member_daily_calls = serializers.IntegerField(allow_null=True)

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer})
    def put(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        tenant = member_daily_calls_set(actor=self.actor(request), calls=data.validated_data["member_daily_calls"])
        return Response(self.OutputSerializer(tenant).data)
