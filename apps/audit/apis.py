from __future__ import annotations

from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.permissions import Perm
from apps.api.base import PageQuery, StrictQuery, TenantApi
from apps.api.fields import InRangeDateTimeField
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_event_list


class AuditEventOutput(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_label")

    class Meta:
        model = AuditEvent
        fields = (
            "id", "created_at", "actor", "actor_user_id", "actor_api_key_id", "action", "target_type", "target_id",
            "ip", "user_agent", "metadata",
        )  # fmt: skip
        read_only_fields = fields


class AuditFilter(StrictQuery, PageQuery):
    actor = serializers.CharField(required=False, allow_blank=True, max_length=254)
    action = serializers.CharField(required=False, allow_blank=True, max_length=64)
    # ``from`` is a Python keyword, so the field is declared below.
    to = InRangeDateTimeField(required=False)

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["from"] = InRangeDateTimeField(required=False)
        return fields

    def validate(self, attrs: dict[str, object]) -> dict[str, object]:
        since, until = attrs.get("from"), attrs.get("to")
        if since and until and since >= until:  # type: ignore[operator]
            raise serializers.ValidationError({"to": [_("“to” must be after “from”.")]})
        return attrs


class AuditEventListApi(TenantApi):
    """GET /api/audit-events: the tenant's audit trail, newest first.

    Filters: ``actor`` (part of an email or label), ``action`` (exact, or a family
    ending in "." such as ``user.``), ``from`` and ``to`` (ISO 8601 times).
    """

    required_permission = Perm.VIEW_AUDIT
    query = AuditFilter

    @extend_schema(parameters=[AuditFilter], responses={200: AuditEventOutput(many=True)})
    def get(self, request: Request) -> Response:
        data = self.query_data
        events = audit_event_list(
            actor=data.get("actor"), action=data.get("action"), since=data.get("from"), until=data.get("to")
        )
        return self.paginate(request, events, AuditEventOutput)
