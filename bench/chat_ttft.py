"""Chat time to first token: through HydroNet against the model server directly, side by side.

    make bench-chat                                  # throwaway PostgreSQL 18 and Redis
    make bench-chat BENCH_ARGS="--relay"             # and the floor: a bare relay, side by side
    DATABASE_URL=... REDIS_URL=... .venv/bin/python bench/chat_ttft.py --rounds 200

One run starts the offline demo model server and HydroNet under the production
web server (``deploy.web``, the Dockerfile's command: granian, 3 workers × 16
threads, or WEB_CONCURRENCY × WEB_THREADS), provisions a tenant in a database of
its own, and then measures, alternating request by request:

* direct: ``POST /v1/chat/completions`` with ``stream: true`` to the model server,
  until the first chunk with content;
* HydroNet: ``POST /api/conversations/{id}/messages`` with ``stream: true`` (JWT,
  the user message stored, history read, tools looked up, model called) until
  the first ``token`` event.

Both send the model server the same request (HydroNet's system prompt and the
user's message), so the difference is HydroNet's own work.

With ``--relay`` another mode joins the same rotation: the same two requests to
``bench/relay_wsgi.py`` under the same command, an app that only relays the
model's stream. What it adds is the floor any streaming proxy pays on the
machine (the server, the extra hop, relaying); the report also gives what
HydroNet adds beyond it. The relay has no target. With ``--gunicorn`` HydroNet
also runs under gunicorn's gthread workers (the same workers × threads), the
server before granian, in the same rotation: the two servers side by side.
With ``--layout 6x8`` HydroNet also runs under granian with 6 workers × 8
threads in the same rotation: two process layouts side by side.

Each sample reads its stream to the end. Three measurements:

* 1 stream: one request at a time, the two modes in turn;
* 20 streams: 20 streams open at once, each sending its requests back to
  back with the two modes in turn (half of them starting with each), so both
  modes see the same load: about 10 streams of each kind in flight. The first
  request of each stream is left out (they all start together);
* 20 burst: 20 requests of one mode started at the same instant, then 20 of the
  other. This measures queueing for the CPU more than HydroNet's own work and
  is reported without a target.

The target (DESIGN.md): HydroNet adds at most 5 ms to the p50 time to first
token, at 1 and at 20 streams. The script exits non-zero if it misses either.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_MS = 5.0


def ttft(client: httpx2.Client, url: str, body: dict[str, object], headers: dict[str, str], marker: bytes) -> float:
    """Seconds from sending the request to the first chunk containing ``marker``."""
    started = time.perf_counter()
    elapsed = None
    with client.stream("POST", url, json=body, headers=headers) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():  # read to the end, so the stream finishes normally
            if elapsed is None and marker in chunk:
                elapsed = time.perf_counter() - started
    if elapsed is None:
        raise RuntimeError(f"no {marker!r} in the stream from {url}")
    return elapsed


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=120, help="requests per mode at concurrency 1")
    parser.add_argument("--concurrency", type=int, default=20, help="streams open at once")
    parser.add_argument("--stream-rounds", type=int, default=6,
                        help="requests per mode on each concurrent stream, after the first")  # fmt: skip
    parser.add_argument("--batches", type=int, default=3, help="bursts per mode (reported, no target)")
    parser.add_argument("--relay", action="store_true", help="also measure a bare relay (bench/relay_wsgi.py)")
    parser.add_argument("--gunicorn", action="store_true", help="also measure HydroNet under gunicorn gthread")
    parser.add_argument("--layout", type=_layout, metavar="WxT",
                        help="also measure HydroNet under granian with W workers x T threads")  # fmt: skip
    args = parser.parse_args()

    from bench.scratch import scratch

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    with scratch("ttft"):
        return run(args)


def run(args: argparse.Namespace) -> int:
    from demo.testing import run_model_server
    from deploy import web

    with run_model_server(token_delay_ms=20) as model_root:
        os.environ["LLM_BASE_URL"] = f"{model_root}/v1"
        os.environ["LLM_MODELS"] = "hydronet-demo"
        import django

        django.setup()

        from apps.chat.services import SYSTEM_PROMPT

        token = _bench_member()
        port = _free_port()
        env = production_env(f"localhost:{port}")
        with ExitStack() as servers:
            servers.enter_context(_server(web.argv(bind=f"127.0.0.1:{port}", quiet=True), port, env))
            others: dict[str, int] = {}
            if args.gunicorn:
                others["gunicorn"] = _free_port()
                servers.enter_context(_server(_gunicorn_argv(others["gunicorn"]), others["gunicorn"],
                                              env))  # fmt: skip
            if args.layout:
                name, (workers, threads) = "x".join(map(str, args.layout)), args.layout
                others[name] = _free_port()
                layout = web.argv(bind=f"127.0.0.1:{others[name]}", workers=workers, threads=threads, quiet=True)
                servers.enter_context(_server(layout, others[name], env))
            if args.relay:
                others["relay"] = _free_port()
                relay = web.argv(bind=f"127.0.0.1:{others['relay']}", app="bench.relay_wsgi:application", quiet=True)
                servers.enter_context(_server(relay, others["relay"],
                                              {**os.environ, "BENCH_SYSTEM_PROMPT": SYSTEM_PROMPT}))  # fmt: skip
            results = measure(args, model_root, port, token, others)

    met = True
    print(f"{'streams':<12}{'mode':<10}{'n':>5}{'p50 ms':>10}{'p90 ms':>10}")
    for label, modes in results.items():
        for mode, values in modes.items():
            print(f"{label:<12}{mode:<10}{len(values):>5}{percentile(values, 50) * 1000:>10.1f}"
                  f"{percentile(values, 90) * 1000:>10.1f}")  # fmt: skip
        added = _added(modes, "hydronet")
        if "gunicorn" in modes:
            print(f"  {label}: under gunicorn gthread HydroNet adds {_added(modes, 'gunicorn'):.1f} ms at p50 "
                  f"(under granian {added:.1f}; no target)")  # fmt: skip
        for mode in modes.keys() - {"direct", "hydronet", "gunicorn", "relay"}:
            print(f"  {label}: with {mode} workers x threads HydroNet adds {_added(modes, mode):.1f} ms at p50 "
                  f"(with the default layout {added:.1f}; no target)")  # fmt: skip
        if "relay" in modes:
            print(f"  {label}: a bare relay adds {_added(modes, 'relay'):.1f} ms at p50 (the floor; no target), "
                  f"HydroNet {added - _added(modes, 'relay'):.1f} ms more")  # fmt: skip
        if label.endswith("burst"):
            print(f"  {label}: HydroNet adds {added:.1f} ms at p50 (all streams start at once; no target)")
            continue
        ok = added <= TARGET_MS
        met = met and ok
        print(f"  {label} stream(s): HydroNet adds {added:.1f} ms at p50 (target <= {TARGET_MS:.0f}: "
              f"{'met' if ok else 'NOT met'})")  # fmt: skip
    return 0 if met else 1


def production_env(base_domain: str) -> dict[str, str]:
    """The environment of a process that serves HydroNet with the production settings, over plain HTTP,
    sharing this process's database, Redis, secret and encryption keys (Django is set up)."""
    from django.conf import settings

    # The bench's one workspace stands for the many that would share a server: its 20 streams, more than half
    # of a process's threads when they land unevenly, are not refused for its share, nor kept out of the threads
    # kept for quiet workspaces (the checks still run).
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.prod", "SECURE_SSL_REDIRECT": "false",
            "SITE_SCHEME": "http", "SECRET_KEY": settings.SECRET_KEY, "LOG_LEVEL": "WARNING",
            "FIELD_ENCRYPTION_KEYS": ",".join(settings.FIELD_ENCRYPTION_KEYS), "BASE_DOMAIN": base_domain,
            "TENANT_MAX_IN_FLIGHT": "1000", "TENANT_RESERVED_THREADS": "0"}  # fmt: skip


def _added(modes: dict[str, list[float]], mode: str) -> float:
    """Milliseconds ``mode`` adds to the direct request's p50."""
    return (statistics.median(modes[mode]) - statistics.median(modes["direct"])) * 1000


def _layout(text: str) -> tuple[int, int]:
    """``WxT``: workers and threads, both positive."""
    workers, _, threads = text.partition("x")
    if not (workers.isdigit() and threads.isdigit() and int(workers) > 0 and int(threads) > 0):
        raise argparse.ArgumentTypeError(f"expected WORKERSxTHREADS such as 6x8, not {text!r}")
    return int(workers), int(threads)


def _gunicorn_argv(port: int) -> list[str]:
    """The Dockerfile's command until 2026-11-30: gunicorn gthread, with the same workers × threads."""
    return [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}",
            "--workers", os.environ.get("WEB_CONCURRENCY", "3"), "--threads", os.environ.get("WEB_THREADS", "16"),
            "--worker-class", "gthread", "--log-level", "warning"]  # fmt: skip


@contextmanager
def _server(argv: list[str], port: int, env: dict[str, str]) -> Iterator[None]:
    """Run ``argv`` until the context ends, once it answers /healthz on ``port``."""
    log = Path(tempfile.mkstemp(prefix="ttft-server-", suffix=".log")[1])
    with log.open("wb") as out:
        server = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait(port)
        yield
    except BaseException:
        print(f"the server's log ({argv[-1]}): {log}", file=sys.stderr)
        raise
    else:
        log.unlink(missing_ok=True)
    finally:
        server.terminate()
        server.wait(15)


class _Conversations:
    """New conversations for HydroNet's samples, created before each measurement (untimed)."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.unused: dict[int, list[int]] = {}  # server port: conversations not posted to yet

    def create(self, client: httpx2.Client, count: int) -> None:
        """``count`` new conversations on each server, for the measurement that follows."""

        def one(port: int) -> int:
            url = f"http://127.0.0.1:{port}/api/conversations"
            return int(client.post(url, json={}, headers=self.headers).json()["id"])

        with ThreadPoolExecutor(max_workers=4) as pool:
            for port in self.unused:
                self.unused[port] = list(pool.map(lambda _n, port=port: one(port), range(count)))

    def take(self, port: int) -> int:
        return self.unused[port].pop()  # list.pop is atomic: the streams' threads share the list


def measure(
    args: argparse.Namespace, model_root: str, port: int, token: str, others: dict[str, int] | None = None
) -> dict[str, dict[str, list[float]]]:
    """All modes send the model the same request: our system prompt and one user message.

    Each HydroNet sample posts to a new conversation, so the model server sees
    no history there either. The conversations are created before each
    measurement starts (untimed), so that its streams are all that loads the
    servers while it runs. The relay answers the same requests. ``others``: more
    modes (name: port) that answer HydroNet's requests.
    """
    from apps.chat.services import SYSTEM_PROMPT

    question = "hello"
    direct_url = f"{model_root}/v1/chat/completions"
    direct_headers = {"Authorization": "Bearer bench"}
    direct_body = {
        "model": "hydronet-demo",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}],
    }

    def direct(client: httpx2.Client) -> float:
        return ttft(client, direct_url, direct_body, direct_headers, b'"delta": {"content": "')

    headers = {"Host": f"bench.localhost:{port}", "Authorization": f"Bearer {token}"}
    conversations = _Conversations(headers)

    def through(server_port: int) -> Callable[[httpx2.Client], float]:
        conversations.unused[server_port] = []

        def sample(client: httpx2.Client) -> float:
            url = f"http://127.0.0.1:{server_port}/api/conversations/{conversations.take(server_port)}/messages"
            return ttft(client, url, {"content": question, "stream": True}, headers, b"event: token")

        return sample

    modes: dict[str, Callable[[httpx2.Client], float]] = {"direct": direct, "hydronet": through(port)}
    modes.update((name, through(other)) for name, other in (others or {}).items())
    order = list(modes.items())

    def empty() -> dict[str, list[float]]:
        return {mode: [] for mode in modes}

    results: dict[str, dict[str, list[float]]] = {}
    # Idle connections are dropped after 1 s, before a server may close them (gunicorn's keep-alive
    # is 2 s): reusing one as the server closes it would fail the request with a reset.
    limits = httpx2.Limits(max_connections=64, keepalive_expiry=1.0)
    with httpx2.Client(timeout=60, limits=limits) as client:
        conversations.create(client, args.concurrency)
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:  # warm every worker and pool
            list(pool.map(lambda _n: [fn(client) for fn in modes.values()], range(args.concurrency)))
        conversations.create(client, args.rounds)
        one = empty()
        for _ in range(args.rounds):
            for mode, fn in order:
                one[mode].append(fn(client))
        results["1"] = one

        def stream_after_stream(thread: int) -> dict[str, list[float]]:
            """One of the concurrent streams: requests back to back, the modes in turn."""
            shift = thread % len(order)  # each mode starts an equal share of the streams
            mine = order[shift:] + order[:shift]
            samples = empty()
            for round_ in range(args.stream_rounds + 1):
                for mode, fn in mine:
                    elapsed = fn(client)
                    if round_:  # the first round starts all streams at once: that is the burst below
                        samples[mode].append(elapsed)
            return samples

        conversations.create(client, args.concurrency * (args.stream_rounds + 1))
        steady = empty()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            for samples in pool.map(stream_after_stream, range(args.concurrency)):
                for mode, values in samples.items():
                    steady[mode] += values
        results[str(args.concurrency)] = steady

        conversations.create(client, args.batches * args.concurrency)
        burst = empty()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            for _ in range(args.batches):
                for mode, fn in order:
                    burst[mode] += list(pool.map(lambda _n, fn=fn: fn(client), range(args.concurrency)))
        results[f"{args.concurrency} burst"] = burst
    return results


def _bench_member() -> str:
    """Provision the bench tenant (enterprise: no quota) with one member; return their access token."""
    from django.core.management import call_command
    from django.test.utils import override_settings

    from apps.accounts.models import Role, User
    from apps.accounts.services import token_pair_issue
    from apps.core.actors import Actor
    from apps.tenants.db import connection
    from apps.tenants.services import tenant_provision

    call_command("migrate_platform", parallel=1, verbosity=0)
    with override_settings(BASE_DOMAIN="localhost"):
        tenant = tenant_provision(
            name="Bench", slug="bench", plan="enterprise", admin_email="admin@bench.example.com",
            admin_password="Bench-Password-2026", actor=Actor(label="bench"),
        ).tenant  # fmt: skip
    connection.set_tenant(tenant)
    user = User.objects.create_user("bench@bench.example.com", "Bench-Password-2026", role=Role.USER)
    token = str(token_pair_issue(user=user)["access"])
    connection.set_schema_to_public()
    return token


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx2.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"the server on port {port} did not start")


if __name__ == "__main__":
    sys.exit(main())
