"""Run the demo servers in subprocesses on loopback, for tests.

::

    with run_model_server(token_delay_ms=5) as base_url:      # "http://127.0.0.1:PORT"
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="x")

    with run_mcp_server() as url:                              # "http://127.0.0.1:PORT/mcp"
        ...

Each server binds port 0 and announces the port the OS gave it, so there is no
race for a "free" port. The context manager waits until the server answers HTTP,
and stops (then, if need be, kills) the process on exit. If the server does not
come up, :class:`DemoServerError` carries the tail of its log.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"listening on (http://\S+)")


class DemoServerError(RuntimeError):
    """A demo server did not start."""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def run_demo_process(
    module: str, args: list[str], *, probe_path: str, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> Iterator[str]:
    """Run ``python -m <module> <args> --port 0`` until the context ends; yield the URL it announces.

    Waits for the ``listening on <url>`` line, then for ``GET <origin><probe_path>``
    to get any HTTP answer. Output goes to a temporary log file that is removed
    afterwards (and quoted in :class:`DemoServerError` if the server fails to start).
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    log_fd, log_name = tempfile.mkstemp(prefix=f"{module.rsplit('.', 1)[-1]}-", suffix=".log")
    log = Path(log_name)
    argv = [sys.executable, "-m", module, *args, "--port", "0"]
    with os.fdopen(log_fd, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603  # our own module
    try:
        url = _wait_until_ready(proc, log, what=module, probe_path=probe_path, headers=headers or {}, timeout=timeout)
        yield url
    finally:
        _stop(proc)
        log.unlink(missing_ok=True)


def _wait_until_ready(
    proc: subprocess.Popen[bytes], log: Path, *, what: str, probe_path: str, headers: dict[str, str], timeout: float
) -> str:
    deadline = time.monotonic() + timeout
    url: str | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if url is None and (match := _LISTENING.search(log.read_text(errors="replace"))):
            url = match.group(1)
        if url is not None:
            origin = re.sub(r"^(http://[^/]+).*$", r"\1", url)
            try:
                httpx2.get(origin + probe_path, headers=headers, timeout=2)
            except httpx2.TransportError:
                pass
            else:
                return url
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-3000:]
    raise DemoServerError(f"{what} did not start within {timeout:.0f}s (exit code {proc.poll()}):\n{tail}")


@contextmanager
def run_model_server(
    *, token_delay_ms: float = 15, api_key: str | None = None, host: str = "127.0.0.1", timeout: float = 30.0
) -> Iterator[str]:
    """Run ``demo.model_server`` and yield its base URL, ``http://HOST:PORT`` (append ``/v1`` for OpenAI clients)."""
    args = ["--host", host, "--token-delay-ms", str(token_delay_ms), "--log-level", "warning"]
    headers = {}
    if api_key:
        args += ["--api-key", api_key]
        headers["Authorization"] = f"Bearer {api_key}"
    with run_demo_process("demo.model_server", args, probe_path="/v1/models", headers=headers, timeout=timeout) as url:
        yield url.removesuffix("/v1")


@contextmanager
def run_mcp_server(*, host: str = "127.0.0.1", timeout: float = 30.0) -> Iterator[str]:
    """Run ``demo.mcp_server`` and yield its streamable-HTTP endpoint, ``http://HOST:PORT/mcp``."""
    args = ["--host", host, "--log-level", "warning"]
    with run_demo_process("demo.mcp_server", args, probe_path="/mcp", timeout=timeout) as url:
        yield url
