"""The identity API of a tenant: auth, members, invitations and API keys. One class per operation."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts import services
from apps.accounts.models import ApiKey, Invitation, Role, User
from apps.accounts.permissions import Perm
from apps.accounts.selectors import (
    access_api_key,
    access_invitation,
    access_user,
    api_key_list,
    invitation_list_open,
    user_list,
)
from apps.api.base import AUTHENTICATED, PageOnlyQuery, PageQuery, StrictQuery, StrictSerializer, TenantApi
from apps.api.fields import InRangeDateTimeField
from apps.api.schema import error_response, quota_exceeded


class UserOutput(serializers.ModelSerializer):
    # Declared: DRF drops allow_blank from a read-only model field, and the schema then left out the "" of a
    # member who never chose a language.
    language = serializers.ChoiceField(
        choices=settings.LANGUAGES, allow_blank=True, read_only=True, help_text="Empty until the member chooses one."
    )

    class Meta:
        model = User
        fields = ("id", "email", "full_name", "role", "is_active", "date_joined", "last_login", "language")
        read_only_fields = fields


class InvitationOutput(serializers.ModelSerializer):
    invited_by = serializers.EmailField(source="invited_by.email", allow_null=True, default=None)
    is_expired = serializers.SerializerMethodField()

    class Meta:
        model = Invitation
        fields = ("id", "email", "role", "invited_by", "created_at", "expires_at", "is_expired")
        read_only_fields = fields

    def get_is_expired(self, invitation: Invitation) -> bool:
        return not invitation.is_pending


class ApiKeyOutput(serializers.ModelSerializer):
    created_by = serializers.EmailField(source="created_by.email", allow_null=True, default=None)
    is_usable = serializers.BooleanField()

    class Meta:
        model = ApiKey
        fields = (
            "id", "name", "role", "prefix", "created_by", "created_at", "expires_at", "last_used_at",
            "revoked_at", "is_usable",
        )  # fmt: skip
        read_only_fields = fields


ROLE_CHOICES = Role.choices


# --- Auth -------------------------------------------------------------------------

REFRESH_TOKEN_REFUSED = error_response(
    "`token_not_valid` (expired, revoked, or the password changed since) or `token_tenant_mismatch`."
)


class LoginApi(TenantApi):
    """POST /api/auth/login: email and password for a token pair."""

    required_permission = AUTHENTICATED
    dangerously_allow_anonymous = True

    class InputSerializer(StrictSerializer):
        email = serializers.CharField(max_length=254)
        password = serializers.CharField(max_length=4096, trim_whitespace=False)

    class OutputSerializer(serializers.Serializer):
        access = serializers.CharField()
        refresh = serializers.CharField()
        user = UserOutput()
        tenant = serializers.CharField()

    @extend_schema(
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            401: error_response("`invalid_credentials`: the email or the password is not correct."),
            429: error_response("`rate_limited`: too many failed attempts for this email or from this address."),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.login_authenticate(
            request=request,
            email=data.validated_data["email"],
            password=data.validated_data["password"],
            actor=self.actor(request),
            channel="api",
        )
        tokens = services.token_pair_issue(user=user)
        body = {**tokens, "user": user, "tenant": request.tenant.slug}  # type: ignore[attr-defined]
        return Response(self.OutputSerializer(body).data)


class RefreshApi(TenantApi):
    """POST /api/auth/refresh: a new token pair; the refresh token sent is blacklisted."""

    required_permission = AUTHENTICATED
    dangerously_allow_anonymous = True

    class InputSerializer(StrictSerializer):
        refresh = serializers.CharField(max_length=4096)

    class OutputSerializer(serializers.Serializer):
        access = serializers.CharField()
        refresh = serializers.CharField()

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer, 401: REFRESH_TOKEN_REFUSED}, auth=[])
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(services.token_refresh(raw=data.validated_data["refresh"]))


class LogoutApi(TenantApi):
    """POST /api/auth/logout: blacklist a refresh token."""

    required_permission = AUTHENTICATED
    dangerously_allow_anonymous = True

    class InputSerializer(StrictSerializer):
        refresh = serializers.CharField(max_length=4096)

    @extend_schema(request=InputSerializer, responses={204: None, 401: REFRESH_TOKEN_REFUSED}, auth=[])
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.token_revoke(actor=self.actor(request), raw=data.validated_data["refresh"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeApi(TenantApi):
    """GET /api/auth/me: who is asking, with their role and permissions."""

    required_permission = AUTHENTICATED

    class OutputSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=["user", "api_key"])
        id = serializers.IntegerField(allow_null=True)
        email = serializers.CharField()
        full_name = serializers.CharField()
        role = serializers.CharField()
        permissions = serializers.ListField(child=serializers.CharField())
        tenant = serializers.CharField()
        language = serializers.CharField(allow_null=True, help_text="A member's chosen language; null for an API key.")

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request) -> Response:
        from apps.accounts.permissions import ROLE_PERMISSIONS

        principal: Any = request.user
        is_user = isinstance(principal, User)
        body = {
            "kind": "user" if is_user else "api_key",
            "id": principal.pk if is_user else principal.api_key.pk,
            "email": principal.email,
            "full_name": principal.full_name if is_user else principal.api_key.name,
            "role": principal.role,
            "permissions": sorted(ROLE_PERMISSIONS.get(principal.role, ())),
            "tenant": request.tenant.slug,  # type: ignore[attr-defined]
            "language": principal.language if is_user else None,
        }
        return Response(self.OutputSerializer(body).data)


class ProfileUpdateApi(TenantApi):
    """PATCH /api/auth/me: change one's own name, and the language of emails to oneself. Role, staff flags
    and tenant are not accepted."""

    required_permission = AUTHENTICATED

    class InputSerializer(StrictSerializer):
        full_name = serializers.CharField(max_length=150, allow_blank=True, required=False)
        language = serializers.ChoiceField(choices=settings.LANGUAGES, required=False)

    @extend_schema(request=InputSerializer, responses={200: UserOutput})
    def patch(self, request: Request) -> Response:
        member = self.member(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_update_profile(actor=self.actor(request), user=member, **data.validated_data)
        return Response(UserOutput(user).data)


class PasswordChangeApi(TenantApi):
    """POST /api/auth/password: change one's own password; other sessions and tokens end."""

    required_permission = AUTHENTICATED

    class InputSerializer(StrictSerializer):
        old_password = serializers.CharField(max_length=4096, trim_whitespace=False)
        new_password = serializers.CharField(max_length=4096, trim_whitespace=False)

    @extend_schema(request=InputSerializer, responses={204: None})
    def post(self, request: Request) -> Response:
        member = self.member(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.user_change_password(
            actor=self.actor(request),
            user=member,
            old_password=data.validated_data["old_password"],
            new_password=data.validated_data["new_password"],
            keep_session_key=request.session.session_key if hasattr(request, "session") else None,
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class PasswordResetRequestApi(TenantApi):
    """POST /api/auth/password-reset: email a reset link. Always 202, whether or not the email exists."""

    required_permission = AUTHENTICATED
    dangerously_allow_anonymous = True

    class InputSerializer(StrictSerializer):
        email = serializers.CharField(max_length=254)

    @extend_schema(
        request=InputSerializer,
        responses={202: None, 429: error_response("`rate_limited`: too many requests for this email or address.")},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.password_reset_request(email=data.validated_data["email"], actor=self.actor(request))
        return Response(status=status.HTTP_202_ACCEPTED)


class PasswordResetConfirmApi(TenantApi):
    """POST /api/auth/password-reset/confirm: the uid and token from the link, and the new password."""

    required_permission = AUTHENTICATED
    dangerously_allow_anonymous = True

    class InputSerializer(StrictSerializer):
        uid = serializers.CharField(max_length=64)
        token = serializers.CharField(max_length=128)
        new_password = serializers.CharField(max_length=4096, trim_whitespace=False)

    @extend_schema(request=InputSerializer, responses={204: None}, auth=[])
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.password_reset_confirm(
            uidb64=data.validated_data["uid"],
            token=data.validated_data["token"],
            new_password=data.validated_data["new_password"],
            actor=self.actor(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Members ----------------------------------------------------------------------


class UserListApi(TenantApi):
    """GET /api/users: members, paginated; filter by search, role and active."""

    required_permission = Perm.MANAGE_USERS

    class FilterSerializer(StrictQuery, PageQuery):
        search = serializers.CharField(required=False, allow_blank=True, max_length=254)
        role = serializers.ChoiceField(choices=ROLE_CHOICES, required=False)
        is_active = serializers.BooleanField(required=False, allow_null=True, default=None)

    query = FilterSerializer

    @extend_schema(parameters=[FilterSerializer], responses={200: UserOutput(many=True)})
    def get(self, request: Request) -> Response:
        filters = self.query_data
        users = user_list(
            search=filters.get("search", ""),
            role=filters.get("role", ""),
            is_active=filters.get("is_active"),
        )
        return self.paginate(request, users, UserOutput)


class UserCreateApi(TenantApi):
    """POST /api/users: add a member with a password (or invite them instead)."""

    required_permission = Perm.MANAGE_USERS

    class InputSerializer(StrictSerializer):
        email = serializers.CharField(max_length=254)
        password = serializers.CharField(max_length=4096, trim_whitespace=False)
        role = serializers.ChoiceField(choices=ROLE_CHOICES, default=Role.USER)
        full_name = serializers.CharField(max_length=150, required=False, allow_blank=True, default="")

    @extend_schema(request=InputSerializer, responses={201: UserOutput, 402: quota_exceeded("users")})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_create(actor=self.actor(request), **data.validated_data)
        return Response(UserOutput(user).data, status=status.HTTP_201_CREATED)


class UserDetailApi(TenantApi):
    """GET /api/users/{id}."""

    required_permission = Perm.MANAGE_USERS

    @extend_schema(responses={200: UserOutput})
    def get(self, request: Request, user_id: int) -> Response:
        return Response(UserOutput(access_user(self.actor(request), user_id)).data)


class UserRoleUpdateApi(TenantApi):
    """PATCH /api/users/{id}: change a member's role. The last active admin stays an admin."""

    required_permission = Perm.MANAGE_USERS

    class InputSerializer(StrictSerializer):
        role = serializers.ChoiceField(choices=ROLE_CHOICES)

    @extend_schema(request=InputSerializer, responses={200: UserOutput})
    def patch(self, request: Request, user_id: int) -> Response:
        actor = self.actor(request)
        user = access_user(actor, user_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(UserOutput(services.user_change_role(actor=actor, user=user, **data.validated_data)).data)


class UserDeleteApi(TenantApi):
    """DELETE /api/users/{id}: remove a member for good. The last active admin cannot be deleted."""

    required_permission = Perm.MANAGE_USERS

    @extend_schema(responses={204: None})
    def delete(self, request: Request, user_id: int) -> Response:
        actor = self.actor(request)
        services.user_delete(actor=actor, user=access_user(actor, user_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class UserDeactivateApi(TenantApi):
    """POST /api/users/{id}/deactivate: no more logins; sessions and refresh tokens end now."""

    required_permission = Perm.MANAGE_USERS

    @extend_schema(request=None, responses={200: UserOutput})
    def post(self, request: Request, user_id: int) -> Response:
        actor = self.actor(request)
        return Response(UserOutput(services.user_deactivate(actor=actor, user=access_user(actor, user_id))).data)


class UserReactivateApi(TenantApi):
    """POST /api/users/{id}/reactivate: within the plan's user limit."""

    required_permission = Perm.MANAGE_USERS

    @extend_schema(request=None, responses={200: UserOutput, 402: quota_exceeded("users")})
    def post(self, request: Request, user_id: int) -> Response:
        actor = self.actor(request)
        return Response(UserOutput(services.user_reactivate(actor=actor, user=access_user(actor, user_id))).data)


# --- Invitations ------------------------------------------------------------------


class InvitationListApi(TenantApi):
    """GET /api/invitations: open invitations, expired ones included."""

    required_permission = Perm.MANAGE_USERS
    query = PageOnlyQuery

    @extend_schema(responses={200: InvitationOutput(many=True)})
    def get(self, request: Request) -> Response:
        return self.paginate(request, invitation_list_open(), InvitationOutput)


class InvitationCreateApi(TenantApi):
    """POST /api/invitations: email an invitation with a role. Counts against the user limit."""

    required_permission = Perm.MANAGE_USERS

    class InputSerializer(StrictSerializer):
        email = serializers.CharField(max_length=254)
        role = serializers.ChoiceField(choices=ROLE_CHOICES, default=Role.USER)

    @extend_schema(request=InputSerializer, responses={201: InvitationOutput, 402: quota_exceeded("users")})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        invitation = services.invitation_create(actor=self.actor(request), **data.validated_data)
        return Response(InvitationOutput(invitation).data, status=status.HTTP_201_CREATED)


class InvitationRevokeApi(TenantApi):
    """DELETE /api/invitations/{id}: withdraw an open invitation."""

    required_permission = Perm.MANAGE_USERS

    @extend_schema(responses={204: None})
    def delete(self, request: Request, invitation_id: int) -> Response:
        actor = self.actor(request)
        services.invitation_revoke(actor=actor, invitation=access_invitation(actor, invitation_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationAcceptApi(TenantApi):
    """POST /api/invitations/accept: the token from the link, a name and a password."""

    required_permission = AUTHENTICATED
    dangerously_allow_anonymous = True

    class InputSerializer(StrictSerializer):
        token = serializers.CharField(max_length=512)
        password = serializers.CharField(max_length=4096, trim_whitespace=False)
        full_name = serializers.CharField(max_length=150, required=False, allow_blank=True, default="")

    @extend_schema(request=InputSerializer, responses={201: UserOutput}, auth=[])
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.invitation_accept(actor=self.actor(request), **data.validated_data)
        return Response(UserOutput(user).data, status=status.HTTP_201_CREATED)


# --- API keys -------------------------------------------------------------------------


class ApiKeyListApi(TenantApi):
    """GET /api/api-keys: every key, revoked ones last. Secrets are never shown again."""

    required_permission = Perm.MANAGE_API_KEYS
    query = PageOnlyQuery

    @extend_schema(responses={200: ApiKeyOutput(many=True)})
    def get(self, request: Request) -> Response:
        return self.paginate(request, api_key_list(), ApiKeyOutput)


class ApiKeyCreateApi(TenantApi):
    """POST /api/api-keys: a new key; its ``secret`` is in this response only."""

    required_permission = Perm.MANAGE_API_KEYS

    class InputSerializer(StrictSerializer):
        name = serializers.CharField(max_length=100)
        role = serializers.ChoiceField(choices=ROLE_CHOICES, default=Role.USER)
        expires_at = InRangeDateTimeField(required=False, allow_null=True, default=None)

    class OutputSerializer(ApiKeyOutput):
        secret = serializers.CharField()

        class Meta(ApiKeyOutput.Meta):
            fields = (*ApiKeyOutput.Meta.fields, "secret")  # type: ignore[assignment]
            read_only_fields = fields  # type: ignore[assignment]

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        api_key, secret = services.api_key_create(actor=self.actor(request), **data.validated_data)
        api_key.secret = secret  # type: ignore[attr-defined]
        return Response(self.OutputSerializer(api_key).data, status=status.HTTP_201_CREATED)


class ApiKeyRevokeApi(TenantApi):
    """DELETE /api/api-keys/{id}: revoke a key; it is refused at once."""

    required_permission = Perm.MANAGE_API_KEYS

    @extend_schema(responses={204: None})
    def delete(self, request: Request, api_key_id: int) -> Response:
        actor = self.actor(request)
        services.api_key_revoke(actor=actor, api_key=access_api_key(actor, api_key_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
