import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.prod")
# A web process's threads share a pool of database connections (settings.DATABASE_POOL).
os.environ.setdefault("DATABASE_POOL", "true")

application = get_wsgi_application()


def _import_every_view() -> None:
    """Load both URL confs, and with them every view, the openai and mcp clients, now.

    Otherwise each worker imports them on its first request, and every request
    that arrives meanwhile waits on the import lock: seconds, under load.
    """
    from django.conf import settings
    from django.urls import get_resolver

    for urlconf in (settings.ROOT_URLCONF, settings.PUBLIC_SCHEMA_URLCONF):
        get_resolver(urlconf).url_patterns  # noqa: B018


_import_every_view()
