import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.prod")
# A web process's threads share a pool of database connections (settings.DATABASE_POOL).
os.environ.setdefault("DATABASE_POOL", "true")

application = get_wsgi_application()


def _end_turns_before_the_kill() -> None:
    """On a deploy's SIGTERM, the turns still streaming end cleanly before the web server kills the process."""
    from apps.core import shutdown

    shutdown.watch_signals()


_end_turns_before_the_kill()


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


def _freeze_what_start_up_made() -> None:
    """Keep the garbage collector off the objects start-up made: modules, URL patterns, settings.

    They live as long as the process, yet every full collection walks them all
    again, holding the GIL (and every thread's request) meanwhile. After one
    collection of start-up's garbage they move to the permanent generation
    (``gc.freeze``), and collections walk only what requests create
    (docs/benchmarks.md).
    """
    gc.collect()
    gc.freeze()


_freeze_what_start_up_made()
