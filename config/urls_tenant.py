"""URLs on a tenant's host (<slug>.BASE_DOMAIN): its web UI and its API. No admin here."""

from django.urls import include, path, re_path
from django.views.generic import RedirectView

from apps.accounts.views import language_view
from apps.core.views import api_path_not_found, openai_path_without_v1
from apps.tenants.urls import tenant_urlpatterns

handler400 = "apps.core.views.bad_request"
handler403 = "apps.core.views.permission_denied"
handler404 = "apps.core.views.not_found"
handler500 = "apps.core.views.server_error"

# Django tries these in order, on every request: the API first, as most requests are API calls (a chat
# turn's path was resolved after about fifty page patterns, 0.1 ms). No page path starts with api/ or v1/.
urlpatterns = [
    path("api/", include("apps.api.urls")),
    path("v1/", include("apps.openai_api.urls")),
    path("", RedirectView.as_view(pattern_name="tenants:dashboard", permanent=False), name="home"),
    path("", include("apps.accounts.urls")),
    path("", include((tenant_urlpatterns, "tenants"))),
    path("", include("apps.chat.urls")),
    path("", include("apps.mcp.urls")),
    path("", include("apps.llm.urls")),
    path("", include("apps.usage.urls")),
    path("i18n/setlang/", language_view, name="set_language"),  # Django's, and the member's choice kept
    # Last: any other API path is the JSON 404, under DEBUG too (where Django would show its HTML page).
    re_path(r"^(?:api|v1)(?:/|$)", api_path_not_found),
    # OpenAI's paths without /v1 (a base URL without it): where the API is, in JSON, not the HTML 404 page.
    re_path(r"^(?:chat/completions|completions|models|embeddings)/?$", openai_path_without_v1),
]
