"""Production: granian (deploy/web.py) behind a TLS-terminating proxy."""

from .base import *  # noqa: F403
from .base import env

DEBUG = False
SITE_SCHEME = env("SITE_SCHEME", default="https")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Cookies only over https; SECURE_COOKIES=false is for a plain-http trial
# (docker compose on a laptop), never for production.
SECURE_COOKIES = env.bool("SECURE_COOKIES", default=True)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
LANGUAGE_COOKIE_SECURE = SECURE_COOKIES
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 30)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

if not FIELD_ENCRYPTION_KEYS:  # noqa: F405
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("Set FIELD_ENCRYPTION_KEYS: tenants' API keys and MCP headers are encrypted with it.")
