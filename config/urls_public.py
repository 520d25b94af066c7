"""URLs on the platform host (BASE_DOMAIN): landing, sign-up, staff admin, public API."""

from django.contrib import admin
from django.urls import include, path, re_path

from apps.core.views import api_path_not_found
from apps.tenants.urls import public_api_urlpatterns, public_urlpatterns

handler400 = "apps.core.views.bad_request"
handler403 = "apps.core.views.permission_denied"
handler404 = "apps.core.views.not_found"
handler500 = "apps.core.views.server_error"

urlpatterns = [
    path("", include((public_urlpatterns, "tenants"))),
    path("api/public/", include((public_api_urlpatterns, "public-api"))),
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    # Last: any other API path is the JSON 404, under DEBUG too (where Django would show its HTML page).
    re_path(r"^(?:api|v1)(?:/|$)", api_path_not_found),
]
