"""The production web server: granian serving ``config.wsgi``.

    python -m deploy.web                          # the Dockerfile's command, on 0.0.0.0:8000
    python -m deploy.web --bind 127.0.0.1:8123

``WEB_CONCURRENCY`` worker processes (default 3), each running the app in up to
``WEB_THREADS`` threads (default 16); a streamed chat reply holds one thread to
its end. granian's HTTP side is Rust: it accepts, parses and writes without the
GIL, so a request reaches a Python thread, and a streamed token the client,
sooner than through gunicorn's gthread workers on the same machine: about 1 ms
for a bare relay, more with 20 streams in flight (docs/benchmarks.md, "the web
server"). A worker that dies is replaced; on SIGTERM, replies still streaming
get 30 s to end (chat turns still going after ``WEB_TURN_GRACE_SECONDS`` stop cleanly first:
``apps.core.shutdown``). The process execs granian, so a container's SIGTERM reaches it
directly.

The tests and the benchmarks start the same command through ``argv``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

DEFAULT_WORKERS = 3
DEFAULT_THREADS = 16
# As gunicorn's graceful timeout did: on SIGTERM, replies still streaming get this long to end.
GRACEFUL_SECONDS = 30


class ConfigError(ValueError):
    """A sizing variable that is not a positive whole number."""


def _count(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, not {value}")
    return value


def argv(
    *,
    bind: str = "0.0.0.0:8000",
    app: str = "config.wsgi:application",
    workers: int | None = None,
    threads: int | None = None,
    quiet: bool = False,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """The command line that serves ``app`` on ``bind`` (``host:port``).

    ``workers`` and ``threads`` default to ``WEB_CONCURRENCY`` and ``WEB_THREADS``. ``quiet``
    (benchmarks): no access log, warnings only, since a log line per request is work of its own.
    """
    environ = os.environ if environ is None else environ
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"bind must be host:port, not {bind!r}")
    workers = workers or _count(environ, "WEB_CONCURRENCY", DEFAULT_WORKERS)
    threads = threads or _count(environ, "WEB_THREADS", DEFAULT_THREADS)
    return [
        sys.executable, "-m", "granian", "--interface", "wsgi", "--host", host.strip("[]"), "--port", port,
        "--workers", str(workers), "--blocking-threads", str(threads), "--runtime-mode", "st", "--no-ws",
        "--respawn-failed-workers", "--workers-kill-timeout", str(GRACEFUL_SECONDS),
        "--log-level", "warning" if quiet else "info", "--no-access-log" if quiet else "--access-log", app,
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", default="0.0.0.0:8000", help="host:port to listen on")
    args = parser.parse_args()
    try:
        command = argv(bind=args.bind)
    except ConfigError as exc:
        parser.exit(2, f"deploy.web: {exc}\n")
    os.execv(command[0], command)  # noqa: S606 (our own command line, no shell)


if __name__ == "__main__":
    main()
