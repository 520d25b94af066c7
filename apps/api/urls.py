"""The tenant API under /api/ on a tenant's host."""

from django.urls import path
from drf_spectacular.renderers import (
    OpenApiJsonRenderer,
    OpenApiJsonRenderer2,
    OpenApiYamlRenderer,
    OpenApiYamlRenderer2,
)
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from apps.accounts import apis as accounts
from apps.api.routing import operations
from apps.audit import apis as audit
from apps.chat import apis as chat
from apps.llm import apis as llm
from apps.mcp import apis as mcp
from apps.usage import apis as usage

SCHEMA_RENDERERS = [OpenApiJsonRenderer, OpenApiJsonRenderer2, OpenApiYamlRenderer, OpenApiYamlRenderer2]

app_name = "api"

# In the order Django tries them: the chat first, the most requested.
urlpatterns = [
    path(
        "conversations",
        operations(GET=chat.ConversationListApi, POST=chat.ConversationCreateApi),
        name="conversations",
    ),
    path(
        "conversations/<int:conversation_id>",
        operations(GET=chat.ConversationDetailApi, PATCH=chat.ConversationRenameApi, DELETE=chat.ConversationDeleteApi),
        name="conversation",
    ),
    path(
        "conversations/<int:conversation_id>/messages",
        operations(GET=chat.MessageListApi, POST=chat.MessagePostApi),
        name="conversation-messages",
    ),
    path("conversations/<int:conversation_id>/retry", chat.MessageRetryApi.as_view(), name="conversation-retry"),
    path("conversations/<int:conversation_id>/edit", chat.MessageEditApi.as_view(), name="conversation-edit"),
    path(
        "conversations/<int:conversation_id>/export", chat.ConversationExportApi.as_view(), name="conversation-export"
    ),
    path("auth/login", accounts.LoginApi.as_view(), name="auth-login"),
    path("auth/refresh", accounts.RefreshApi.as_view(), name="auth-refresh"),
    path("auth/logout", accounts.LogoutApi.as_view(), name="auth-logout"),
    path("auth/me", operations(GET=accounts.MeApi, PATCH=accounts.ProfileUpdateApi), name="auth-me"),
    path("auth/password", accounts.PasswordChangeApi.as_view(), name="auth-password"),
    path("auth/password-reset", accounts.PasswordResetRequestApi.as_view(), name="auth-password-reset"),
    path(
        "auth/password-reset/confirm",
        accounts.PasswordResetConfirmApi.as_view(),
        name="auth-password-reset-confirm",
    ),
    path("users", operations(GET=accounts.UserListApi, POST=accounts.UserCreateApi), name="users"),
    path(
        "users/<int:user_id>",
        operations(GET=accounts.UserDetailApi, PATCH=accounts.UserRoleUpdateApi, DELETE=accounts.UserDeleteApi),
        name="user",
    ),
    path("users/<int:user_id>/deactivate", accounts.UserDeactivateApi.as_view(), name="user-deactivate"),
    path("users/<int:user_id>/reactivate", accounts.UserReactivateApi.as_view(), name="user-reactivate"),
    path(
        "invitations",
        operations(GET=accounts.InvitationListApi, POST=accounts.InvitationCreateApi),
        name="invitations",
    ),
    path("invitations/accept", accounts.InvitationAcceptApi.as_view(), name="invitation-accept"),
    path("invitations/<int:invitation_id>", accounts.InvitationRevokeApi.as_view(), name="invitation"),
    path("api-keys", operations(GET=accounts.ApiKeyListApi, POST=accounts.ApiKeyCreateApi), name="api-keys"),
    path("api-keys/<int:api_key_id>", accounts.ApiKeyRevokeApi.as_view(), name="api-key"),
    path("audit-events", audit.AuditEventListApi.as_view(), name="audit-events"),
    path("models", chat.ModelListApi.as_view(), name="models"),
    path(
        "model-provider",
        operations(GET=llm.ModelProviderDetailApi, PUT=llm.ModelProviderSaveApi, DELETE=llm.ModelProviderDeleteApi),
        name="model-provider",
    ),
    path("model-provider/test", llm.ModelProviderTestApi.as_view(), name="model-provider-test"),
    path(
        "assistant",
        operations(GET=llm.AssistantInstructionsApi, PUT=llm.AssistantInstructionsSaveApi),
        name="assistant",
    ),
    path("mcp-services", operations(GET=mcp.McpServiceListApi, POST=mcp.McpServiceCreateApi), name="mcp-services"),
    path(
        "mcp-services/<int:service_id>",
        operations(GET=mcp.McpServiceDetailApi, PATCH=mcp.McpServiceUpdateApi, DELETE=mcp.McpServiceDeleteApi),
        name="mcp-service",
    ),
    path("mcp-services/<int:service_id>/enable", mcp.McpServiceEnableApi.as_view(), name="mcp-service-enable"),
    path("mcp-services/<int:service_id>/disable", mcp.McpServiceDisableApi.as_view(), name="mcp-service-disable"),
    path("mcp-services/<int:service_id>/test", mcp.McpServiceTestApi.as_view(), name="mcp-service-test"),
    path("usage", usage.UsageApi.as_view(), name="usage"),
    path("quota", usage.QuotaApi.as_view(), name="quota"),
    path("quota/spending-cap", usage.SpendingCapApi.as_view(), name="spending-cap"),
    path("quota/member-daily-calls", usage.MemberDailyCallsApi.as_view(), name="member-daily-calls"),
    # JSON first: the schema's default, and what its errors (a 406 for an unknown ?format=) are written in.
    path("schema/", SpectacularAPIView.as_view(renderer_classes=SCHEMA_RENDERERS), name="schema"),
    # The split view: Swagger UI's start-up script is a file of its own (docs/?script), not inline, which the
    # Content-Security-Policy (script-src 'self') would block.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
]
