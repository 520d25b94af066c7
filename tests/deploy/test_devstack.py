"""The embedded stack behind `make run`: its faults must read as one clear line."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from deploy.devstack import ROOT, EmbeddedPostgres, EmbeddedRedis, StackError, read_env_file, run_lock, write_env_file


def devstack(*args: str, devdata: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "HYDRONET_DEVDATA": str(devdata), **env}
    environment.pop("DATABASE_URL", None)
    environment.pop("REDIS_URL", None)
    environment.pop("BASE_DOMAIN", None)
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "-m", "deploy.devstack", *args],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def pg_root() -> Iterator[Path]:
    """Under .devdata/ like `make test`'s own servers: as root, PostgreSQL runs as
    `nobody`, who cannot enter pytest's private temporary directory."""
    (ROOT / ".devdata").mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="pytest-pg-", dir=ROOT / ".devdata"))
    path.chmod(0o755)
    yield path / "pg"
    shutil.rmtree(path, ignore_errors=True)


def test_a_second_make_run_says_one_is_running(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        result = devstack("run", devdata=tmp_path)
    assert result.returncode == 1
    assert f"HydroNet is already running from this checkout (pid {os.getpid()})" in result.stderr


PRINT_STACK = "from django.conf import settings; print(settings.BASE_DOMAIN, settings.DATABASES['default']['NAME'])"


def test_make_run_leaves_an_environment_a_shell_can_source(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5/a b", "REDIS_URL": "redis://127.0.0.1:6/0",
           "BASE_DOMAIN": "localhost:8001", "DJANGO_SETTINGS_MODULE": "config.settings.dev", "SECRET": "x"}  # fmt: skip
    path = write_env_file(tmp_path, env)
    assert read_env_file(tmp_path) == {name: value for name, value in env.items() if name != "SECRET"}
    sourced = subprocess.run(
        ["bash", "-c", f'set -a; . "{path}"; set +a; echo "$DATABASE_URL|$BASE_DOMAIN|${{SECRET:-none}}"'],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert sourced.stdout == "postgres://postgres@127.0.0.1:5/a b|localhost:8001|none\n"


def test_make_manage_uses_the_running_stack(tmp_path: Path) -> None:
    running = {
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/stack_of_the_running_make_run",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "BASE_DOMAIN": "running.localhost:8123",
        "DJANGO_SETTINGS_MODULE": "config.settings.dev",
    }
    with run_lock(tmp_path):
        starting = devstack("manage", "shell", "--no-imports", "-c", PRINT_STACK, devdata=tmp_path)
        write_env_file(tmp_path, running)
        result = devstack("manage", "shell", "--no-imports", "-c", PRINT_STACK, devdata=tmp_path)
    assert starting.returncode == 1
    assert "`make run` is still starting its servers" in starting.stderr
    assert result.returncode == 0, result.stderr
    assert result.stdout == "running.localhost:8123 stack_of_the_running_make_run\n"
    assert "devstack:" not in result.stderr  # no server of its own was started


def test_make_manage_without_make_run_starts_the_stack_for_one_command(pg_root: Path) -> None:
    devdata = pg_root.parent
    result = devstack("manage", "list_tenants", "--json", devdata=devdata)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # migrated, no tenant yet, and the stack's own lines on stderr
    assert "devstack: PostgreSQL 18 on 127.0.0.1:" in result.stderr
    again = devstack("manage", "shell", "--no-imports", "-c", PRINT_STACK, devdata=devdata)
    assert again.stdout == "localhost:8000 hydronet\n"
    assert not (devdata / "env").exists()
    with run_lock(devdata):  # the lock was given back
        pass
    assert EmbeddedPostgres(devdata / "pg", durable=True)._running_port() is None  # and its PostgreSQL stopped


def test_make_manage_needs_a_command(tmp_path: Path) -> None:
    result = devstack("manage", devdata=tmp_path)
    assert result.returncode == 1
    assert 'manage needs a command, e.g. `make manage ARGS="list_tenants"`' in result.stderr


def test_a_busy_port_is_named(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = devstack("run", devdata=tmp_path, PORT=str(port))
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stderr


def test_embedded_postgres_starts_keeps_its_data_and_stops(pg_root: Path) -> None:
    root = pg_root
    pg = EmbeddedPostgres(root, durable=True)
    url = pg.start()
    try:
        with psycopg.connect(url.replace("postgres://", "postgresql://"), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (n int)")
            conn.execute("INSERT INTO kept VALUES (42)")
    finally:
        pg.stop()
    again = EmbeddedPostgres(root, durable=True)
    url = again.start()
    try:
        with psycopg.connect(url.replace("postgres://", "postgresql://")) as conn:
            assert conn.execute("SELECT n FROM kept").fetchone() == (42,)
    finally:
        again.stop()
    if os.geteuid() == 0:
        assert (root / "data").stat().st_uid != 0  # the server ran unprivileged


def test_embedded_postgres_that_cannot_start_says_where_its_log_is(pg_root: Path) -> None:
    root = pg_root
    pg = EmbeddedPostgres(root, durable=True)
    pg.start()
    pg.stop()
    with (root / "data" / "postgresql.conf").open("a") as conf:
        conf.write("this line is not a setting\n")
    with pytest.raises(StackError) as caught:
        EmbeddedPostgres(root, durable=True).start()
    assert str(caught.value) == f"the embedded PostgreSQL could not start; see its log: {root / 'postgres.log'}"
    assert "syntax error" in (root / "postgres.log").read_text()


def test_embedded_redis_starts_and_stops(tmp_path: Path) -> None:
    import redis

    server = EmbeddedRedis(tmp_path, durable=False)
    url = server.start()
    try:
        assert redis.Redis.from_url(url).ping()
    finally:
        server.stop()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
