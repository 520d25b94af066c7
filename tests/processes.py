"""Real processes for tests: a Celery worker and the production web server on loopback.

And ``canned_server``: a loopback HTTP server, in a thread, that answers every request the same way
(a web page where a model server was expected, a stream that reports an error), or by what it was asked.

Both run against this session's test database and Redis keys. They only see
committed data, so tests that use them commit what they need and clean up.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from deploy import web

ROOT = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    """The URL of the test database pytest-django created (not the one in DATABASE_URL)."""
    s = connection.settings_dict
    auth = quote(s["USER"] or "postgres")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"])
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": test_database_url(),
        "HYDRONET_TEST_RUN_ID": settings.TEST_RUN_ID,
        "PYTHONUNBUFFERED": "1",
        "LLM_BASE_URL": settings.LLM_BASE_URL,
        "LLM_MODELS": ",".join(settings.LLM_MODELS),
        "LLM_API_KEY": settings.LLM_API_KEY,
        **extra,
    }


@pytest.fixture(scope="session")
def demo_model_url() -> Iterator[str]:
    """The offline demo model server (OpenAI-compatible), ``http://127.0.0.1:PORT/v1``."""
    from demo.testing import run_model_server

    with run_model_server(token_delay_ms=5) as url:
        yield f"{url}/v1"


@pytest.fixture(scope="session")
def demo_mcp_url() -> Iterator[str]:
    """The demo hydrology MCP server, ``http://127.0.0.1:PORT/mcp``."""
    from demo.testing import run_mcp_server

    with run_mcp_server() as url:
        yield url


@pytest.fixture(scope="session")
def awkward_mcp_url() -> Iterator[str]:
    """``tests.chat.awkward_mcp``: tools that sleep and that answer a given number of characters."""
    from demo.testing import run_demo_process

    with run_demo_process("tests.chat.awkward_mcp", [], probe_path="/mcp") as url:
        yield url


def sse_body(*chunks: dict[str, Any] | str) -> bytes:
    """A model's stream of ``chunks`` (a string is sent as it is: JSON that ``json.dumps`` would not write), then
    ``[DONE]``."""
    texts = (chunk if isinstance(chunk, str) else json.dumps(chunk) for chunk in chunks)
    return "".join(f"data: {text}\n\n" for text in texts).encode() + b"data: [DONE]\n\n"


@contextmanager
def canned_server(
    body: bytes | Callable[[bytes], bytes],
    *,
    status: int | Callable[[bytes], int] = 200,
    content_type: str = "text/html",
    headers: dict[str, str] | None = None,
    heard: list[dict[str, str]] | None = None,
) -> Iterator[str]:
    """``http://127.0.0.1:<port>``, answering every GET and POST with ``status``, ``headers`` and ``body``: the
    same each time, or what ``status`` and ``body`` make of the request's body (a GET's is empty). ``heard``
    gets each request's headers, names in lower case."""

    class Canned(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if heard is not None:
                heard.append({name.lower(): value for name, value in self.headers.items()})
            request = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            answer = body(request) if callable(body) else body
            self.send_response(status(request) if callable(status) else status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(answer)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(answer)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    with http_server(Canned) as root:
        yield root


@dataclass(frozen=True)
class HeldModel:
    """A model server (``held_model_server``) whose answer to one request waits, after its first chunk, for the
    test: ``asked`` is set once that chunk was sent, and the answer goes on once the test sets ``go_on``."""

    url: str
    asked: threading.Event
    go_on: threading.Event
    requests: list[bytes]


@contextmanager
def held_model_server(answers: list[list[dict[str, Any]]], *, hold: int) -> Iterator[HeldModel]:
    """A model server (``.url``, ending ``/v1``) that streams ``answers[n]``'s chunks, then ``[DONE]``, to its
    n-th request (the last one to those after it), and after the first chunk of request ``hold`` waits for the
    test to set ``go_on``: the test changes what it wants at a known point of a turn, with no race."""
    asked, go_on, requests = threading.Event(), threading.Event(), []

    class Held(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the answer ends when the connection closes: it can be sent as it comes

        def do_POST(self) -> None:
            requests.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            n = len(requests) - 1
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            chunks = answers[min(n, len(answers) - 1)]
            for i, chunk in enumerate(chunks):
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                if i == 0 and n == hold:
                    asked.set()
                    go_on.wait(30)
            self.wfile.write(b"data: [DONE]\n\n")

        def log_message(self, *args: object) -> None:
            pass

    with http_server(Held) as root:
        try:
            yield HeldModel(url=f"{root}/v1", asked=asked, go_on=go_on, requests=requests)
        finally:
            go_on.set()


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``http://127.0.0.1:<port>``, served by ``handler`` in threads until the block ends."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _process(
    argv: list[str], env: dict[str, str], log: Path, *, ready: Callable[[], bool], what: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until the context ends; fail the test if it is not ready within a minute."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(ready, proc, log, what=f"the {what} to start")
        yield proc
    finally:
        _stop(proc)


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, *, what: str) -> None:
    """Poll ``condition`` for up to a minute; fail the test with ``proc``'s log if it exits or time runs out."""
    deadline = time.monotonic() + 60
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"waited in vain for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def answers(port: int, path: str = "/readyz") -> bool:
    """Whether the web server on ``port`` answers ``path`` with 200 (for any of its workers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            # Longer than the web server gives its workers to stop: killed before them, it would
            # leave them running.
            proc.wait(web.GRACEFUL_SECONDS + 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Worker:
    email_dir: Path
    log: Path


@pytest.fixture(scope="session")
def celery_worker(django_db_setup: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A real `celery worker` process consuming this run's queue."""
    tmp = tmp_path_factory.mktemp("worker")
    email_dir = tmp / "mail"
    email_dir.mkdir()
    log = tmp / "worker.log"
    env = child_env(
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(email_dir),
    )
    argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "-l", "INFO",
            "-Q", settings.CELERY_TASK_DEFAULT_QUEUE, "-n", f"test-{settings.TEST_RUN_ID}@%h"]  # fmt: skip
    with _process(argv, env, log, ready=lambda: b" ready." in log.read_bytes(), what="Celery worker"):
        yield Worker(email_dir=email_dir, log=log)


@dataclass(frozen=True)
class WebServer:
    port: int
    log: Path
    pid: int

    def url(self, host: str = "localhost", path: str = "/") -> str:
        return f"http://{host}:{self.port}{path}"


@contextmanager
def serve(
    tmp: Path, demo_model_url: str, *, workers: int = 2, threads: int = 8, **settings_env: str
) -> Iterator[WebServer]:
    """The production web server (``deploy.web``) serving the app on a free loopback port, with
    BASE_DOMAIN=localhost:<port>, talking to the demo model server, until the context ends.
    ``settings_env``: more environment for the server (settings read from it)."""
    port = _free_port()
    log = tmp / f"web-{port}.log"
    env = child_env(BASE_DOMAIN=f"localhost:{port}", LLM_BASE_URL=demo_model_url, LLM_MODELS="hydronet-demo",
                    **settings_env)  # fmt: skip
    argv = web.argv(bind=f"127.0.0.1:{port}", workers=workers, threads=threads)

    with _process(argv, env, log, ready=lambda: answers(port), what="web server") as proc:
        yield WebServer(port=port, log=log, pid=proc.pid)


@pytest.fixture(scope="session")
def web_server(
    django_db_setup: object, tmp_path_factory: pytest.TempPathFactory, demo_model_url: str
) -> Iterator[WebServer]:
    """The session's web server (2 workers) on a free loopback port."""
    with serve(tmp_path_factory.mktemp("web"), demo_model_url) as server:
        yield server
