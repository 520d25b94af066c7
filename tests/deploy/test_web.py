"""The production web server's command (deploy/web.py): its sizing, its faults, and a real process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from deploy import web
from deploy.devstack import ROOT
from tests.processes import _free_port, _process, answers, child_env, wait_until


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


class TestCommand:
    def test_sizes_come_from_the_environment(self) -> None:
        argv = web.argv(bind="127.0.0.1:9000", environ={"WEB_CONCURRENCY": "5", "WEB_THREADS": "8"})
        assert argv[:3] == [sys.executable, "-m", "granian"]
        assert option(argv, "--interface") == "wsgi"
        assert (option(argv, "--host"), option(argv, "--port")) == ("127.0.0.1", "9000")
        assert (option(argv, "--workers"), option(argv, "--blocking-threads")) == ("5", "8")
        assert argv[-1] == "config.wsgi:application"

    def test_defaults_and_explicit_sizes(self) -> None:
        argv = web.argv(environ={})
        assert (option(argv, "--host"), option(argv, "--port")) == ("0.0.0.0", "8000")  # noqa: S104 (a container)
        assert (option(argv, "--workers"), option(argv, "--blocking-threads")) == ("3", "16")
        argv = web.argv(workers=2, threads=4, environ={"WEB_CONCURRENCY": "9", "WEB_THREADS": "9"})
        assert (option(argv, "--workers"), option(argv, "--blocking-threads")) == ("2", "4")

    @pytest.mark.parametrize(
        ("environ", "bind", "message"),
        [
            ({"WEB_CONCURRENCY": "three"}, "0.0.0.0:8000", "WEB_CONCURRENCY must be a whole number"),
            ({"WEB_THREADS": "0"}, "0.0.0.0:8000", "WEB_THREADS must be at least 1"),
            ({"WEB_CONCURRENCY": "-2"}, "0.0.0.0:8000", "WEB_CONCURRENCY must be at least 1"),
            ({}, "8000", "bind must be host:port"),
            ({}, "localhost:http", "bind must be host:port"),
        ],
    )
    def test_bad_settings_are_refused_by_name(self, environ: dict[str, str], bind: str, message: str) -> None:
        with pytest.raises(web.ConfigError, match=message):
            web.argv(bind=bind, environ=environ)

    def test_the_module_refuses_a_bad_setting_with_one_line_and_starts_nothing(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "deploy.web", "--bind", f"127.0.0.1:{_free_port()}"],
            cwd=ROOT, env={**child_env(), "WEB_CONCURRENCY": "many"}, capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert done.returncode == 2
        assert done.stderr.strip().splitlines()[-1] == "deploy.web: WEB_CONCURRENCY must be a whole number, not 'many'"


def started(log: Path) -> int:
    """How many worker processes granian has started serving, respawned ones included."""
    return len(re.findall(r"Started worker-\d+ runtime-", log.read_text()))


@pytest.mark.django_db
def test_the_module_becomes_the_server_keeps_its_workers_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`python -m deploy.web` execs granian (same PID, as PID 1 in the container), runs
    WEB_CONCURRENCY workers, replaces one that dies, and exits on SIGTERM."""
    port = _free_port()
    log = tmp_path / "web.log"
    env = {**child_env(BASE_DOMAIN=f"localhost:{port}"), "WEB_CONCURRENCY": "2", "WEB_THREADS": "2"}
    argv = [sys.executable, "-m", "deploy.web", "--bind", f"127.0.0.1:{port}"]

    def ready() -> bool:  # each worker loads the app on its own, then granian logs its runtime as started
        return started(log) == 2 and answers(port, "/healthz")

    with _process(argv, env, log, ready=ready, what="web server") as proc:
        server = psutil.Process(proc.pid)
        assert "granian" in " ".join(server.cmdline())
        workers = server.children()
        assert len(workers) == 2
        workers[0].kill()  # a worker that dies (the OOM killer, a crash) is replaced
        wait_until(lambda: started(log) == 3, proc, log, what="the worker's replacement")
        assert len(server.children()) == 2
        assert workers[1] in server.children()
        assert workers[0] not in server.children()
        for _ in range(4):  # whichever worker takes the connection answers
            assert answers(port, "/healthz")
        proc.terminate()
        assert proc.wait(40) == 0
