"""A cloned tenant schema must be exactly what running the migrations would build."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.test import override_settings
from django_tenants.utils import schema_context

from apps.accounts.models import User
from apps.tenants.db import connection
from apps.tenants.schemas import schema_create

pytestmark = pytest.mark.django_db


def snapshot(schema: str) -> dict[str, Any]:
    """The catalog facts migrations decide, with the schema's own name taken out."""

    def rows(sql: str) -> list[tuple[Any, ...]]:
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL search_path = {schema}")
            cursor.execute(sql, {"s": schema})
            result = [tuple(str(v).replace(f"{schema}.", "<schema>.") for v in row) for row in cursor.fetchall()]
        connection.set_schema_to_public()
        return sorted(result)

    return {
        "columns": rows(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity, "
            "a.attgenerated, coalesce(pg_get_expr(d.adbin, d.adrelid), ''), "
            "rank() OVER (PARTITION BY c.oid ORDER BY a.attnum) "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE n.nspname = %(s)s AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped"
        ),
        "constraints": rows(
            "SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid) FROM pg_constraint k "
            "JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %(s)s"
        ),
        "indexes": rows(
            "SELECT c.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %(s)s"
        ),
        "triggers": rows(
            "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %(s)s AND NOT t.tgisinternal"
        ),
        "sequences": rows(
            "SELECT c.relname, s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmax FROM pg_sequence s "
            "JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %(s)s"
        ),
        "migrations": rows("SELECT app, name FROM django_migrations"),
        "content_types": rows("SELECT app_label, model FROM django_content_type"),
        "permissions": rows(
            "SELECT ct.app_label, p.codename FROM auth_permission p "
            "JOIN django_content_type ct ON ct.id = p.content_type_id"
        ),
    }


def test_a_cloned_schema_is_what_the_migrations_build() -> None:
    assert schema_create("t_by_clone") == "clone"
    with override_settings(TENANT_BASE_SCHEMA="no_such_base_schema"):
        assert schema_create("t_by_migrations") == "migrations"
    cloned, migrated = snapshot("t_by_clone"), snapshot("t_by_migrations")
    assert cloned["columns"], "the snapshot must see the tables"
    for facet in migrated:
        assert cloned[facet] == migrated[facet], facet


def test_a_cloned_schema_continues_the_id_sequences() -> None:
    schema_create("t_seq_check")
    with schema_context("t_seq_check"):
        user = User.objects.create_user("first@example.com", "Pass-Word-1234")
        Permission.objects.create(codename="extra", name="Extra", content_type_id=1)  # no id collision
    assert user.pk == 1


def test_a_base_schema_with_objects_the_fast_clone_skips_still_clones_completely() -> None:
    base = settings.TENANT_BASE_SCHEMA
    with connection.cursor() as cursor:  # rolled back with the test
        cursor.execute(f"CREATE VIEW {base}.active_users AS SELECT id, email FROM {base}.accounts_user WHERE is_active")
    assert schema_create("t_with_view") == "clone"
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_views WHERE schemaname = 't_with_view' AND viewname = 'active_users'")
        assert cursor.fetchone()[0] == 1


def test_the_clone_leaves_the_connections_search_path_alone() -> None:
    with schema_context("t_alpha"):
        schema_create("t_path_check")
    with schema_context("t_alpha"), connection.cursor() as cursor:
        cursor.execute("SHOW search_path")
        assert cursor.fetchone()[0].startswith("t_alpha")
