"""Provisioning benchmark: a new tenant by clone against a new tenant by migrations.

    make bench-provisioning                      # on throwaway PostgreSQL 18 and Redis
    DATABASE_URL=... REDIS_URL=... .venv/bin/python bench/provisioning.py --runs 9

Each run provisions one tenant through the real service (`tenant_provision`:
schema, domain, first admin, audit event, one transaction), once with the base
schema present (clone) and once with it absent (migrations), alternating so
both see the same machine state. The tenant is dropped after each run, outside
the timing. The result is the ratio of the medians; the target is at most 0.2.

It works in a database of its own, created and dropped here, so it never
touches the data of `make run`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9, help="tenants per method (default 9)")
    args = parser.parse_args()

    from bench.scratch import scratch

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    with scratch("bench"):  # welcome emails queue in its Celery queue, unread
        return run(args.runs)


def run(runs: int) -> int:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import override_settings

    from apps.core.actors import Actor
    from apps.tenants.db import connection
    from apps.tenants.models import Tenant
    from apps.tenants.services import tenant_provision

    call_command("migrate_platform", parallel=1, verbosity=0)
    server = connection.cursor().connection.info.parameter_status("server_version")

    def provision_once(slug: str) -> tuple[float, str]:
        started = time.perf_counter()
        result = tenant_provision(
            name=slug, slug=slug, plan="pro", admin_email=f"admin@{slug}.example.com",
            admin_password="Bench-Password-2026", actor=Actor(label="bench"),
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        how = result.tenant.schema_made_by or "?"
        Tenant.objects.get(pk=result.tenant.pk).delete(force_drop=True)  # type: ignore[call-arg]
        connection.set_schema_to_public()
        return elapsed, how

    provision_once("bench-warmup")  # imports, the clone function, first-use caches
    timings: dict[str, list[float]] = {"clone": [], "migrations": []}
    for i in range(runs):
        elapsed, how = provision_once(f"bench-clone-{i}")
        assert how == "clone", how
        timings["clone"].append(elapsed)
        with override_settings(TENANT_BASE_SCHEMA="bench_no_such_schema"):
            elapsed, how = provision_once(f"bench-migrate-{i}")
        assert how == "migrations", how
        timings["migrations"].append(elapsed)

    clone, migrate = statistics.median(timings["clone"]), statistics.median(timings["migrations"])
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", [settings.TENANT_BASE_SCHEMA])
        tables = cursor.fetchone()[0]
    print(f"PostgreSQL {server}; tenant schema of {tables} tables; {runs} tenants per method, alternating")
    print(f"{'method':<12}{'median':>10}{'min':>10}{'max':>10}")
    for method, values in timings.items():
        print(f"{method:<12}{statistics.median(values):>9.3f}s{min(values):>9.3f}s{max(values):>9.3f}s")
    ratio = clone / migrate
    print(f"clone / migrations = {ratio:.3f}  (target <= 0.200: {'met' if ratio <= 0.2 else 'NOT met'})")
    return 0 if ratio <= 0.2 else 1


if __name__ == "__main__":
    sys.exit(main())
