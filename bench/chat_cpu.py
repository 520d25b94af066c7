"""Where a chat turn's CPU goes: HydroNet's request path step by step, against the bare relay.

    make bench-chat-cpu                               # throwaway PostgreSQL 18 and Redis
    make bench-chat-cpu BENCH_ARGS="--turns 400"

``bench/chat_ttft.py`` measures what HydroNet adds to the time to first token
under the production web server; this script says where that time goes. It
calls the WSGI applications in this process, as a WSGI server's thread calls
them: HydroNet (``config.wsgi``, the production settings and database pool) with
a streamed ``POST /api/conversations/{id}/messages``, and ``bench/relay_wsgi.py``
(the floor any streaming proxy pays) with the same request, alternating turn by
turn against the offline demo model server (5 ms between tokens). For each turn
it reads the thread's CPU time (``time.thread_time``) when each step of
HydroNet's path ends, and reports the medians: the CPU since the WSGI call, and
what each step took, and the process's CPU time to the first token (``time.process_time``: HydroNet reads the
model's stream in a thread of its own, whose CPU the request thread's leaves out). No network hop to a client
and no other process's load:
under the web server, with caches cold, the same steps take longer. There is no
target; the numbers are for deciding what to change (docs/benchmarks.md, chat).

The steps are marked by wrapping the functions that end them; a renamed
function fails the run rather than leaving a step out.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOST = "bench.localhost:8000"
QUESTION = "hello"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=200, help="turns of each kind, after 20 to warm up")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        return measure(args.turns)

    from bench.scratch import scratch
    from demo.testing import run_model_server

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    with scratch("chatcpu"), run_model_server(token_delay_ms=5) as model_root:
        os.environ["LLM_BASE_URL"] = f"{model_root}/v1"
        os.environ["LLM_MODELS"] = "hydronet-demo"
        import django

        django.setup()
        from apps.chat.services import SYSTEM_PROMPT
        from bench.chat_ttft import _bench_member, production_env

        token = _bench_member()
        # The production settings, as bench/chat_ttft.py gives its servers: in a process of their own.
        env = {**production_env("localhost:8000"), "BENCH_TOKEN": token, "BENCH_SYSTEM_PROMPT": SYSTEM_PROMPT}
        return subprocess.call([sys.executable, __file__, "--inner", "--turns", str(args.turns)], cwd=ROOT, env=env)


class Steps:
    """The thread's CPU time when each step of the turn being measured ends."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.turns: list[list[tuple[str, float]]] = []

    def start(self) -> None:
        self.local.marks = [("start", time.thread_time())]

    def mark(self, name: str) -> None:
        marks = getattr(self.local, "marks", None)
        if marks is not None:
            marks.append((name, time.thread_time()))

    def stop(self) -> None:
        self.turns.append(self.local.marks)
        self.local.marks = None

    def wrap(self, owner: Any, attribute: str, *, before: str | None = None, after: str | None = None) -> None:
        original = getattr(owner, attribute)  # AttributeError: the path changed, and this list with it

        @functools.wraps(original)
        def marked(*args: Any, **kwargs: Any) -> Any:
            if before:
                self.mark(before)
            result = original(*args, **kwargs)
            if after:
                self.mark(after)
            return result

        setattr(owner, attribute, marked)


def install(steps: Steps) -> None:
    """Mark the end of each step of a streamed turn, in the order the path takes them."""
    from rest_framework.views import APIView

    from apps.api import authentication
    from apps.chat import apis, engine, services

    steps.wrap(APIView, "dispatch", before="Django's handler, middleware, tenant routing, URL resolving")
    steps.wrap(authentication.TenantJWTAuthentication, "get_user", before="DRF's initial, the JWT decoded",
               after="the user's row read")  # fmt: skip
    steps.wrap(apis, "access_conversation", before="the rest of DRF's initial",
               after="the conversation and its history read")  # fmt: skip
    steps.wrap(services, "turn_start", before="input checked, messages built",
               after="the charge script, the AI setup decoded")  # fmt: skip
    steps.wrap(engine, "open_stream", before="the tools looked up",
               after="openai: the request built and sent, headers read")  # fmt: skip
    steps.wrap(services, "_store_user_message", after="the user's message stored (the model works meanwhile)")


def measure(turns: int) -> int:
    import config.wsgi
    from bench import relay_wsgi

    hydronet = config.wsgi.application
    steps = Steps()
    install(steps)
    token = os.environ["BENCH_TOKEN"]

    def call(app: Callable[..., Iterable[bytes]], method: str, path: str, body: dict[str, Any]) -> Iterable[bytes]:
        raw = json.dumps(body).encode()
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
            "SERVER_NAME": "bench.localhost", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": HOST,
            "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(raw)),
            "HTTP_AUTHORIZATION": f"Bearer {token}", "wsgi.input": io.BytesIO(raw), "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http", "wsgi.version": (1, 0), "wsgi.multithread": True,
            "wsgi.multiprocess": True, "wsgi.run_once": False,
        }  # fmt: skip
        return app(environ, lambda status, headers, exc_info=None: lambda data: None)

    def conversation() -> int:
        response = call(hydronet, "POST", "/api/conversations", {})
        try:
            return int(json.loads(b"".join(response))["id"])
        finally:
            getattr(response, "close", lambda: None)()

    def turn(app: Callable[..., Iterable[bytes]], path: str, marked: bool) -> dict[str, float]:
        """CPU (ms) to the first ``token`` event, to the end, and from the last ``token`` to ``done``."""
        if marked:
            steps.start()
        started, process_started = time.thread_time(), time.process_time()
        first = last_token = process_first = None
        response = call(app, "POST", path, {"content": QUESTION, "stream": True})
        ended = None
        try:
            for chunk in response:
                now = time.thread_time()
                if b"event: token" in chunk:
                    if first is None:
                        first, process_first = now, time.process_time()
                        if marked:
                            steps.mark("the first token event")
                            steps.stop()
                    last_token = now
                elif b"event: done" in chunk:
                    ended = now
        finally:
            getattr(response, "close", lambda: None)()
        if first is None or last_token is None or ended is None or process_first is None:
            raise RuntimeError(f"{path}: no token or no done event")
        whole = time.thread_time() - started
        return {"first": (first - started) * 1000, "whole": whole * 1000, "end": (ended - last_token) * 1000,
                "process_first": (process_first - process_started) * 1000}  # fmt: skip

    relay_path = "/api/conversations/0/messages"
    results: dict[str, list[dict[str, float]]] = {"hydronet": [], "relay": []}
    conversations = [conversation() for _ in range(turns + 20)]
    for n, conversation_id in enumerate(conversations):
        hydronet_turn = turn(hydronet, f"/api/conversations/{conversation_id}/messages", marked=True)
        relay_turn = turn(relay_wsgi.application, relay_path, marked=False)
        if n >= 20:  # the first turns warm the pools, the imports and the caches
            results["hydronet"].append(hydronet_turn)
            results["relay"].append(relay_turn)
    report(steps.turns[20:], results)
    return 0


def report(marked: list[list[tuple[str, float]]], results: dict[str, list[dict[str, float]]]) -> None:
    names = [name for name, _at in marked[0]]
    if any([name for name, _at in marks] != names for marks in marked):
        raise RuntimeError("the turns took different paths; the steps cannot be compared")
    print(f"HydroNet, one streamed turn at a time, medians of {len(marked)} turns (thread CPU, ms):")
    print(f"  {'step ends':<62}{'since the call':>15}{'the step':>10}")
    previous = 0.0
    for index, name in enumerate(names[1:], start=1):
        at = statistics.median((marks[index][1] - marks[0][1]) * 1000 for marks in marked)
        print(f"  {name:<62}{at:>15.2f}{at - previous:>10.2f}")
        previous = at
    # The thread's CPU leaves out the model stream's reads, which HydroNet does in a thread of its own since
    # 2026-12-08 (apps.chat.waits); the process's CPU to the first token counts every thread of the process.
    print(f"\n{'':<12}{'to the first token':>20}{'whole turn':>12}{'last token to done':>20}{'first, process':>16}")
    for kind, turns in results.items():
        first, whole, end, process = (
            statistics.median(t[key] for t in turns) for key in ("first", "whole", "end", "process_first")
        )
        print(f"{kind:<12}{first:>20.2f}{whole:>12.2f}{end:>20.2f}{process:>16.2f}")


if __name__ == "__main__":
    sys.exit(main())
