"""The database connection, typed as django-tenants' schema-aware wrapper.

``from apps.tenants.db import connection`` is Django's own connection object;
only its static type differs, so mypy knows ``schema_name``, ``tenant`` and
``set_schema_to_public()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from django.db import connection as _connection

if TYPE_CHECKING:
    from apps.tenants.postgresql_backend.base import DatabaseWrapper

connection = cast("DatabaseWrapper", _connection)
