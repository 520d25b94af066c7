"""Creating and migrating schemas: the base schema new tenants are cloned from, and the tenants.

A new tenant's schema is a copy of the base schema, structure and rows
(django_migrations, content types, permissions), made by the SQL function in
clone_schema.sql, or by django-tenants' general ``clone_schema()`` when the base
schema holds objects ours does not copy. Because ``manage.py migrate_platform`` keeps the
base schema current, the copy is current too, and the ``migrate --fake`` that
django-tenants runs after a clone is skipped. While the base schema is missing
or behind, a new schema is built by running the migrations instead, so a clone
never hides a migration.

Many tenants are migrated in parallel, and a schema that already has every
migration is skipped with one query instead of a full ``migrate`` run.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Literal

from django.conf import settings
from django.core.management import call_command
from django.db import NotSupportedError, connections, transaction
from django.db.migrations.loader import MigrationLoader
from django_tenants.clone import CLONE_SCHEMA_FUNCTION, CloneSchema
from django_tenants.utils import get_public_schema_name, quote_schema_name, schema_exists

from apps.tenants.db import connection

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@cache
def _all_migrations() -> frozenset[tuple[str, str]]:
    """Every migration of every installed app, as the migrate command records them."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return frozenset(loader.graph.nodes)


def schema_is_current(schema_name: str) -> bool:
    """True if ``schema_name`` has recorded every migration there is."""
    if not schema_exists(schema_name):
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [f"{quote_schema_name(schema_name)}.django_migrations"])
        if cursor.fetchone()[0] is None:
            return False
        cursor.execute(f"SELECT app, name FROM {quote_schema_name(schema_name)}.django_migrations")
        applied = set(cursor.fetchall())
    return _all_migrations() <= applied


def _migrate_one(schema_name: str, verbosity: int) -> str:
    call_command("migrate_schemas", tenant=True, schema_name=schema_name, interactive=False, verbosity=verbosity)
    return schema_name


def _migrate_in_child(args: tuple[str, int]) -> str:
    connections.close_all()  # a forked child must not share its parent's socket
    return _migrate_one(*args)


def migrate_schemas(schema_names: Iterable[str], *, parallel: int, verbosity: int, progress: Progress) -> list[str]:
    """Migrate the schemas that are behind; return which ones were migrated."""
    behind = [s for s in schema_names if not schema_is_current(s)]
    if not behind:
        return []
    progress(f"{len(behind)} schema(s) behind; migrating with {min(parallel, len(behind))} process(es)")
    if parallel <= 1 or len(behind) == 1:
        for schema_name in behind:
            _migrate_one(schema_name, verbosity)
            progress(f"migrated {schema_name}")
        return behind
    connections.close_all()
    with multiprocessing.get_context("fork").Pool(processes=min(parallel, len(behind))) as pool:
        for schema_name in pool.imap_unordered(_migrate_in_child, [(s, verbosity) for s in behind]):
            progress(f"migrated {schema_name}")
    return behind


def base_schema_ensure(*, verbosity: int, progress: Progress) -> bool:
    """Create the base schema new tenants are cloned from, and migrate it. True if it changed."""
    base = settings.TENANT_BASE_SCHEMA
    if base == get_public_schema_name():
        raise ValueError("TENANT_BASE_SCHEMA must not be the public schema")
    if not schema_exists(base):
        progress(f"creating base schema {base}")
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA {quote_schema_name(base)}")
    return bool(migrate_schemas([base], parallel=1, verbosity=verbosity, progress=progress))


CLONE_FUNCTION_SQL = (Path(__file__).parent / "clone_schema.sql").read_text()


def _install_function(name: str, signature: str, sql: str, install: Callable[[], None]) -> None:
    """Install a SQL function once per version of its text, not on every clone.

    Replacing a function takes a lock on its catalog row, so doing it on every
    clone would also make concurrent sign-ups queue behind each other.
    """
    version = f"{name} " + hashlib.sha256(sql.encode()).hexdigest()[:16]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT obj_description(p.oid, 'pg_proc') FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public' AND p.proname = %s",
            [name],
        )
        row = cursor.fetchone()
        if row is not None and row[0] == version:
            return
        install()
        cursor.execute(f"COMMENT ON FUNCTION public.{name}({signature}) IS %s", [version])


def _run_sql(sql: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql)


def _clone(base: str, schema_name: str) -> None:
    """Copy ``base`` into ``schema_name``: our fast clone, else django-tenants' general one."""
    _install_function("hydronet_clone_schema", "text, text", CLONE_FUNCTION_SQL, lambda: _run_sql(CLONE_FUNCTION_SQL))
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT public.hydronet_clone_schema(%s, %s)", [base, schema_name])
        return
    except NotSupportedError:
        logger.warning("base schema %s holds objects the fast clone does not copy; using clone_schema()", base)
    _install_function(
        "clone_schema",
        "text, text, public.cloneparms[]",
        CLONE_SCHEMA_FUNCTION,
        CloneSchema()._create_clone_schema_function,
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT public.clone_schema(%s, %s, 'DATA')", [base, schema_name])


def schema_create(schema_name: str, *, verbosity: int = 0) -> Literal["clone", "migrations"]:
    """Create ``schema_name`` as a current tenant schema; say how it was made."""
    base = settings.TENANT_BASE_SCHEMA
    connection.set_schema_to_public()
    if schema_is_current(base):
        _clone(base, schema_name)
        connection.set_schema_to_public()
        return "clone"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA {quote_schema_name(schema_name)}")
    _migrate_one(schema_name, verbosity)
    connection.set_schema_to_public()
    return "migrations"
