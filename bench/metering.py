"""Metering: one metered endpoint with and without metering, quota and rate limit, side by side.

    make bench-metering                              # throwaway PostgreSQL 18 and Redis
    make bench-metering BENCH_ARGS="--http"          # the batches through two production web servers
    DATABASE_URL=... REDIS_URL=... .venv/bin/python bench/metering.py --batches 10 --requests 200

One run starts the offline demo model server (no delay between tokens),
provisions a tenant on the "pro" plan in a database of its own, and sends
``POST /v1/chat/completions`` (API key, not streamed, a short prompt) from
``--concurrency`` threads, with the production settings, in batches that
alternate between two variants:

* metered: as in production (``apps.usage.meter.Meter``: the rate limit, the
  quota check and the call counted in one Lua script, then the ledger row, with
  the call's tokens, in PostgreSQL; the tokens reach Redis with the minute's flush);
* unmetered: the same requests with ``Meter.for_request`` swapped for a
  stand-in that does nothing. The switch exists only in the bench; there is no
  setting that turns metering off.

By default HydroNet runs in this process, called through Django's WSGI handler
as a WSGI server would call it, and the unmetered batches patch ``Meter`` for
their length. With ``--http`` the batches go over HTTP to two servers instead,
each started with production's command (``deploy.web``, 2 workers):
``config.wsgi`` and ``bench.unmetered_wsgi``, which applies the same patch at
start-up. (Until 2026-11-30 this was ``--gunicorn``, when production ran gunicorn.)

In this process it also sends ``--probe`` requests of each variant one at a
time, timing ``Meter.charge`` and ``Meter.record``, and counts the Redis round
trips of every request it serves by wrapping redis-py at the class level: a
command sent outside a pipeline is one round trip, a pipeline's ``execute`` is
one. The django cache's calls are counted as well, in both variants; the
difference is what metering costs.

Every metered call must leave one ledger row, and after a flush at the end the
month's counters in Redis must equal usage_stats, calls and tokens.

The targets: metered throughput at least 0.90 of unmetered (ratio of the
medians over the batches), and metering at most 2 Redis round trips a request.
The script exits non-zero if either is missed.

It also reports, without a target, the machine's CPU a request of each variant
costs, by process (this one, each web server with its workers, PostgreSQL, Redis,
the model server), summed over all batches from /proc: steadier than throughput on
a shared 2-core machine, and it says where metering's cost lands (``ProcessCpu``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_RATIO = 0.90
TARGET_ROUND_TRIPS = 2
HOST = "bench.localhost"
METERED, UNMETERED = "metered", "unmetered"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=10, help="batches per variant, alternating (default 10)")
    parser.add_argument("--requests", type=int, default=200, help="requests per batch (default 200)")
    parser.add_argument("--concurrency", type=int, default=8, help="threads sending requests (default 8)")
    parser.add_argument("--probe", type=int, default=50, help="requests per variant one at a time (default 50)")
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens of each request; 0: the whole answer")
    parser.add_argument("--http", action="store_true", help="send the batches to two production web servers")
    args = parser.parse_args()

    from cryptography.fernet import Fernet

    from bench.scratch import scratch

    # The production settings, as the web server runs them, but over plain http on loopback.
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.prod"
    os.environ.update(
        SECRET_KEY=secrets.token_urlsafe(50), FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        SECURE_SSL_REDIRECT="false", SITE_SCHEME="http", BASE_DOMAIN="localhost", LOG_LEVEL="WARNING",
        # One workspace stands for many: not refused for its share, nor kept from the reserve (the checks run).
        TENANT_MAX_IN_FLIGHT="1000", TENANT_RESERVED_THREADS="0",
    )  # fmt: skip
    with scratch("metering"):
        return run(args)


# --- Redis round trips ---------------------------------------------------------------


@dataclass
class Sent:
    """One Redis round trip: what was sent and how long it took."""

    what: str
    seconds: float


class RoundTrips:
    """Records, per thread, the Redis round trips of the request that thread is serving."""

    def __init__(self, prefix: str) -> None:
        self._local = threading.local()
        self._prefix = prefix

    def start(self) -> None:
        self._local.sent = []

    def so_far(self) -> list[Sent]:
        return list(getattr(self._local, "sent", None) or [])

    def take(self) -> list[Sent]:
        sent: list[Sent] = self._local.sent
        self._local.sent = None
        return sent

    def _note(self, what: str, seconds: float) -> None:
        sent = getattr(self._local, "sent", None)
        if sent is not None:
            sent.append(Sent(what, seconds))

    def _describe(self, args: tuple[Any, ...]) -> str:
        name = _text(args[0]).upper()
        key = ""
        if name in ("EVALSHA", "EVAL") and len(args) > 3 and int(args[2]) > 0:
            key = _text(args[3])
        elif len(args) > 1:
            key = _text(args[1])
        return f"{name} {key.replace(self._prefix, '…')}".strip()

    @contextmanager
    def counting(self) -> Iterator[None]:
        """Wrap redis-py: every ``Redis.execute_command`` (a pipeline has its own) and ``Pipeline.execute``."""
        from redis.client import Pipeline, Redis

        command, execute = Redis.execute_command, Pipeline.execute
        trips = self

        def execute_command(client: Any, *args: Any, **options: Any) -> Any:
            started = time.perf_counter()
            try:
                return command(client, *args, **options)
            finally:
                trips._note(trips._describe(args), time.perf_counter() - started)

        def pipeline_execute(pipe: Any, raise_on_error: bool = True) -> Any:
            inside = [trips._describe(args) for args, _options in pipe.command_stack]
            started = time.perf_counter()
            try:
                return execute(pipe, raise_on_error)
            finally:
                if inside:  # an empty pipeline sends nothing
                    trips._note(f"pipeline [{', '.join(inside)}]", time.perf_counter() - started)

        with mock.patch.object(Redis, "execute_command", execute_command), \
                mock.patch.object(Pipeline, "execute", pipeline_execute):  # fmt: skip
            yield


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# --- The unmetered variant -------------------------------------------------------------


class Unmetered:
    """Stands in for ``apps.usage.meter.Meter`` during an unmetered batch: no rate limit, quota or record."""

    count_rate = False
    rate = None
    recorded = 0  # calls written to the ledger: none

    def hit_rate(self, *, enforce: bool = True) -> None:
        pass

    def charge(self, kind: str = "model", *, also_get: str | None = None, alert: bool = True) -> object:
        from apps.usage import limits
        from apps.usage.meter import Ticket

        # Nothing read with it: the turn reads its AI setup with a GET of its own, as without metering.
        return Ticket(kind=kind, day=limits.today(), counted=False)

    def confirm(self, ticket: object) -> None:
        pass

    def record(self, ticket: object, tokens: int = 0) -> None:
        pass

    def release(self, ticket: object) -> None:
        pass

    def keep_claim(self) -> None:
        pass

    def check_storage(self) -> None:
        pass


def metering_switched_off() -> list[Any]:
    """Patches (not started) that make ``Meter.for_request`` and ``Meter.for_actor`` answer ``Unmetered``."""
    from apps.usage.meter import Meter

    def stand_in(*args: Any, **kwargs: Any) -> Unmetered:
        return Unmetered()

    return [mock.patch.object(Meter, "for_request", stand_in), mock.patch.object(Meter, "for_actor", stand_in)]


@contextmanager
def unmetered() -> Iterator[None]:
    patches = metering_switched_off()
    for patch in patches:
        patch.start()
    try:
        yield
    finally:
        for patch in reversed(patches):
            patch.stop()


@contextmanager
def timing_meter(timings: dict[str, list[float]], trips: RoundTrips) -> Iterator[None]:
    """Time ``Meter.charge`` and ``Meter.record``, and the Redis round trips inside each.

    A turn calls ``record`` twice, the second time as a no-op; only the first is timed.
    """
    from apps.usage.meter import Meter

    def timed(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(meter: Meter, *args: Any, **kwargs: Any) -> Any:
            if name == "record" and args[0].done:
                return method(meter, *args, **kwargs)
            before = len(trips.so_far())
            started = time.perf_counter()
            try:
                return method(meter, *args, **kwargs)
            finally:
                timings[name].append(time.perf_counter() - started)
                timings[f"{name} redis"].append(sum(sent.seconds for sent in trips.so_far()[before:]))

        return wrapper

    with mock.patch.object(Meter, "charge", timed("charge", Meter.charge)), \
            mock.patch.object(Meter, "record", timed("record", Meter.record)):  # fmt: skip
        yield


# --- Where the CPU goes ------------------------------------------------------------------

THIS_PROCESS, WEB_METERED, WEB_UNMETERED = "this process", "web server, metered", "web server, unmetered"
POSTGRESQL, REDIS, MODEL_SERVER, OTHER = "PostgreSQL", "Redis", "model server", "other processes"


class ProcessCpu:
    """The machine's CPU time by the role of each process, read from /proc (Linux) around each batch.

    Throughput on a shared 2-core machine moves by a tenth from batch to batch; the CPU
    each variant costs a request, summed over all batches and split by process, is
    steadier and says where metering's cost lands: the web workers' Python, PostgreSQL
    (the ledger row) or Redis (the charge script). Roles: the web servers and their
    workers by process tree, the model server by its command line, PostgreSQL and Redis
    by process name (any on the machine; idle ones add only noise). A clock tick is
    10 ms, hence sums over whole batches rather than per-request figures.
    """

    def __init__(self) -> None:
        self.available = os.path.isdir("/proc/self")
        self.tick = os.sysconf("SC_CLK_TCK") if self.available else 100
        self.servers: dict[int, str] = {}  # a web server's pid -> its role

    def sample(self) -> dict[int, tuple[str, float]]:
        """pid -> (role, CPU seconds so far)."""
        if not self.available:
            return {}
        seen: dict[int, tuple[int, str, str, float]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # gone meanwhile
                continue
            name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
            seen[int(entry)] = (int(fields[1]), name, command, (int(fields[11]) + int(fields[12])) / self.tick)
        return {pid: (self._role(pid, seen), cpu) for pid, (_parent, _name, _command, cpu) in seen.items()}

    def _role(self, pid: int, seen: dict[int, tuple[int, str, str, float]]) -> str:
        _parent, name, command, _cpu = seen[pid]
        ancestor = pid
        while ancestor in seen and ancestor > 1:
            if ancestor in self.servers:
                return self.servers[ancestor]
            if ancestor == os.getpid():
                return MODEL_SERVER if "demo.model_server" in command else THIS_PROCESS
            ancestor = seen[ancestor][0]
        if name.startswith("postgres"):
            return POSTGRESQL
        if name.startswith("redis"):
            return REDIS
        return OTHER

    @staticmethod
    def add_spent(
        total: dict[str, float], before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
    ) -> None:
        """Add the CPU seconds by role between two samples to ``total`` (new processes count from zero)."""
        for pid, (role, cpu) in after.items():
            total[role] = total.get(role, 0.0) + cpu - before.get(pid, (role, 0.0))[1]


PROCESS_CPU = ProcessCpu()


# --- Requests --------------------------------------------------------------------------


@dataclass
class Results:
    throughput: dict[str, list[float]] = field(default_factory=lambda: {METERED: [], UNMETERED: []})
    latency: dict[str, list[float]] = field(default_factory=lambda: {METERED: [], UNMETERED: []})
    round_trips: dict[str, Counter[int]] = field(default_factory=lambda: {METERED: Counter(), UNMETERED: Counter()})
    one_request: dict[str, list[Sent]] = field(default_factory=dict)
    meter: dict[str, list[float]] = field(
        default_factory=lambda: {"charge": [], "charge redis": [], "record": [], "record redis": []}
    )
    requests: dict[str, int] = field(default_factory=lambda: {METERED: 0, UNMETERED: 0})
    # CPU seconds by process role over all batches of each variant, and the requests they served.
    cpu: dict[str, dict[str, float]] = field(default_factory=lambda: {METERED: {}, UNMETERED: {}})
    cpu_requests: dict[str, int] = field(default_factory=lambda: {METERED: 0, UNMETERED: 0})


class Client:
    """Calls the WSGI application as a WSGI server would, and checks each answer."""

    def __init__(self, secret: str, max_tokens: int, trips: RoundTrips) -> None:
        from django.core.handlers.wsgi import WSGIHandler

        self.handler = WSGIHandler()
        self.trips = trips
        body: dict[str, Any] = {"model": "hydronet-demo", "messages": [{"role": "user", "content": "hello"}]}
        if max_tokens:
            body["max_tokens"] = max_tokens
        self.body = json.dumps(body).encode()
        self.authorization = f"Bearer {secret}"

    def post(self, variant: str) -> list[Sent]:
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat/completions", "SCRIPT_NAME": "", "QUERY_STRING": "",
            "SERVER_NAME": HOST, "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": HOST,
            "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(self.body)),
            "HTTP_AUTHORIZATION": self.authorization, "wsgi.input": io.BytesIO(self.body), "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http", "wsgi.version": (1, 0), "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False,
        }  # fmt: skip
        answer: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None, /
        ) -> Callable[[bytes], object]:
            answer["status"], answer["headers"] = status, dict(headers)
            return lambda _data: None  # the write() callable; Django never calls it

        self.trips.start()
        try:
            response = self.handler(environ, start_response)
            try:
                content = b"".join(response)
            finally:
                response.close()  # request_finished, as a WSGI server sends it
        finally:
            sent = self.trips.take()
        check(variant, int(answer["status"].split()[0]), content, answer["headers"])
        return sent


def check(variant: str, status: int, content: bytes, headers: dict[str, str]) -> None:
    """A 200 with a completion; the rate limit's headers only where it was checked."""
    if status != 200 or b'"chat.completion"' not in content:
        raise RuntimeError(f"{variant}: {status}: {content[:500]!r}")
    limited = any(name.lower() == "x-ratelimit-remaining" for name in headers)
    if limited != (variant == METERED):
        raise RuntimeError(f"{variant}: X-RateLimit-Remaining {'present' if limited else 'missing'}")


def measure(args: argparse.Namespace, client: Client) -> Results:
    """Warm up, probe one request at a time (in this process), then the alternating batches."""
    results = Results()
    variants: dict[str, Callable[[], Any]] = {METERED: _as_is, UNMETERED: unmetered}

    def in_process(variant: str) -> None:
        results.round_trips[variant][len(client.post(variant))] += 1

    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        for variant, switch in variants.items():  # imports, connections, the counters rebuilt from PostgreSQL
            with switch():
                list(pool.map(lambda _n, v=variant: client.post(v), range(args.concurrency * 4)))
                results.requests[variant] += args.concurrency * 4

        for n in range(args.probe):  # one at a time: latency, round trips, where the meter's time goes
            for variant, switch in variants.items() if n % 2 == 0 else reversed(variants.items()):
                with switch(), timing_meter(results.meter, client.trips) if variant == METERED else _as_is():
                    started = time.perf_counter()
                    sent = client.post(variant)
                    results.latency[variant].append(time.perf_counter() - started)
                results.round_trips[variant][len(sent)] += 1
                results.one_request[variant] = sent
                results.requests[variant] += 1

        if not args.http:
            batches(args, results, pool, in_process, variants)
            return results
        with web_servers(args.concurrency) as ports, http_client(args.concurrency) as http:
            same = dict.fromkeys(variants, _as_is)  # each server is one variant for the whole run

            def over_http(variant: str) -> None:
                response = http.post(f"http://127.0.0.1:{ports[variant]}/v1/chat/completions", content=client.body,
                                     headers={"Host": HOST, "Authorization": client.authorization,
                                              "Content-Type": "application/json"})  # fmt: skip
                check(variant, response.status_code, response.content, dict(response.headers))

            warm_up = args.concurrency * 16  # enough to reach every thread of both workers
            for variant in variants:
                list(pool.map(lambda _n, v=variant: over_http(v), range(warm_up)))
                results.requests[variant] += warm_up
            batches(args, results, pool, over_http, same)
    return results


def batches(
    args: argparse.Namespace,
    results: Results,
    pool: ThreadPoolExecutor,
    send: Callable[[str], None],
    variants: dict[str, Callable[[], Any]],
) -> None:
    """Alternate whole batches, swapping which variant goes first, so both see the same machine."""
    for n in range(args.batches):
        for variant, switch in variants.items() if n % 2 == 0 else reversed(variants.items()):
            with switch():
                before = PROCESS_CPU.sample()
                started = time.perf_counter()
                list(pool.map(lambda _n, v=variant: send(v), range(args.requests)))
                results.throughput[variant].append(args.requests / (time.perf_counter() - started))
                ProcessCpu.add_spent(results.cpu[variant], before, PROCESS_CPU.sample())
                results.cpu_requests[variant] += args.requests
            results.requests[variant] += args.requests


@contextmanager
def web_servers(threads: int) -> Iterator[dict[str, int]]:
    """Both variants under production's web server (2 workers each); yields their ports."""
    from bench.chat_ttft import _free_port, _wait
    from deploy import web

    servers: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    ports: dict[str, int] = {}
    try:
        for variant, app in ((METERED, "config.wsgi:application"), (UNMETERED, "bench.unmetered_wsgi:application")):
            ports[variant] = _free_port()
            log = Path(tempfile.mkstemp(prefix=f"metering-{variant}-", suffix=".log")[1])
            argv = web.argv(bind=f"127.0.0.1:{ports[variant]}", app=app, workers=2, threads=threads, quiet=True)
            with log.open("wb") as out:
                servers[variant] = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT), log
            PROCESS_CPU.servers[servers[variant][0].pid] = WEB_METERED if variant == METERED else WEB_UNMETERED
        for port in ports.values():
            _wait(port)
        yield ports
    except BaseException:
        for _server, log in servers.values():
            print(f"the server's log: {log}", file=sys.stderr)
        raise
    else:
        for _server, log in servers.values():
            log.unlink(missing_ok=True)
    finally:
        for server, _log in servers.values():
            server.terminate()
            server.wait(15)


@contextmanager
def http_client(connections: int) -> Iterator[Any]:
    """A connection a request, as nginx proxies by default: kept-alive connections would stay
    with whichever worker accepted them, and one worker holding all of them halves a server."""
    import httpx2

    limits = httpx2.Limits(max_connections=connections * 2, max_keepalive_connections=0)
    with httpx2.Client(timeout=60, limits=limits) as client:
        yield client


@contextmanager
def _as_is() -> Iterator[None]:
    yield


# --- The run ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from demo.testing import run_model_server

    with run_model_server(token_delay_ms=0) as model_root:
        os.environ["LLM_BASE_URL"] = f"{model_root}/v1"
        os.environ["LLM_MODELS"] = "hydronet-demo"
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django_tenants.utils import tenant_context

        from apps.accounts.services import api_key_create
        from apps.core.actors import Actor
        from apps.tenants.services import tenant_provision

        call_command("migrate_platform", parallel=1, verbosity=0)
        provisioned = tenant_provision(
            name="Bench", slug="bench", plan="pro", admin_email="admin@bench.example.com",
            admin_password="Bench-Password-2026", actor=Actor(label="bench"),
        )  # fmt: skip
        tenant = provisioned.tenant
        # Checked on every request, never refusing one: the pro plan's 1,000 a minute would.
        tenant.rate_limit_per_minute_override = 1_000_000
        tenant.save(update_fields=["rate_limit_per_minute_override"])
        with tenant_context(tenant):
            _key, secret = api_key_create(
                actor=Actor(user=provisioned.admin, label="bench"), name="bench", role="admin"
            )

        trips = RoundTrips(prefix=settings.CACHE_KEY_PREFIX)
        with trips.counting():
            results = measure(args, Client(secret, args.max_tokens, trips))
        with tenant_context(tenant):
            from apps.usage.models import UsageEvent

            ledger = UsageEvent.objects.count()
            counters_exact = _counters_after_flush(tenant)

    return report(args, results, ledger) if counters_exact else 1


def _counters_after_flush(tenant: Any) -> bool:
    """After the flush the month's live counters in Redis hold every metered call and its tokens, once.

    The calls reach Redis with the charge, the tokens with the flush; usage_stats
    then has both, and the two must agree.
    """
    from django.db.models import Sum
    from django_redis import get_redis_connection

    from apps.usage import limits
    from apps.usage.meter import month_key
    from apps.usage.models import UsageStat
    from apps.usage.services import usage_flush

    usage_flush()
    day = limits.today()
    stored = UsageStat.objects.filter(date__gte=limits.period_start(day)).aggregate(
        calls=Sum("api_calls"), tokens=Sum("tokens_used")
    )
    live = get_redis_connection("default").hmget(month_key(tenant.schema_name, day), ["calls", "tokens"])
    counts = [int(v or 0) for v in live]
    if counts != [stored["calls"] or 0, stored["tokens"] or 0]:
        print(f"after the flush Redis counts {counts} (calls, tokens), usage_stats {stored}")
        return False
    print(f"after the flush Redis and usage_stats agree: {counts[0]} calls, {counts[1]} tokens")
    return True


def report(args: argparse.Namespace, results: Results, ledger: int) -> int:
    if ledger != results.requests[METERED]:
        print(f"the ledger has {ledger} rows for {results.requests[METERED]} metered requests")
        return 1
    served = "two web servers (2 workers each)" if args.http else "WSGI in this process"
    print(f"POST /v1/chat/completions, {served}; {args.concurrency} threads, {args.batches} batches of "
          f"{args.requests} requests per variant, alternating; {ledger} metered calls in the ledger")  # fmt: skip
    print(f"{'variant':<11}{'req/s median':>13}{'min':>8}{'max':>8}{'1 at a time p50':>17}{'Redis trips':>13}")
    medians, trips = {}, {}
    for variant in (METERED, UNMETERED):
        values = results.throughput[variant]
        medians[variant] = statistics.median(values)
        counts = results.round_trips[variant]
        trips[variant] = statistics.median(counts.elements())
        spread = "/".join(str(n) for n in sorted(counts))
        p50 = statistics.median(results.latency[variant]) * 1000
        print(
            f"{variant:<11}{medians[variant]:>13.1f}{min(values):>8.1f}{max(values):>8.1f}{p50:>14.2f} ms{spread:>13}"
        )
    ratio = medians[METERED] / medians[UNMETERED]
    pairs = sorted(m / u for m, u in zip(results.throughput[METERED], results.throughput[UNMETERED], strict=True))
    added = trips[METERED] - trips[UNMETERED]
    ratio_ok, trips_ok = ratio >= TARGET_RATIO, added <= TARGET_ROUND_TRIPS
    print(f"metered / unmetered throughput = {ratio:.3f}, batch pairs {pairs[0]:.3f}-{pairs[-1]:.3f}  "
          f"(target >= {TARGET_RATIO:.2f}: {'met' if ratio_ok else 'NOT met'})")  # fmt: skip
    print(f"Redis round trips a request: {trips[METERED]:g} metered, {trips[UNMETERED]:g} unmetered; metering adds "
          f"{added:g}  (target <= {TARGET_ROUND_TRIPS}: {'met' if trips_ok else 'NOT met'})")  # fmt: skip

    ms = {name: statistics.mean(values) * 1000 for name, values in results.meter.items()}
    per_request = (1 / medians[METERED] - 1 / medians[UNMETERED]) * 1000
    print(f"metering's cost a request: {per_request:.2f} ms of throughput; one at a time (means), "
          f"Meter.charge {ms['charge']:.2f} ms ({ms['charge redis']:.2f} in Redis), Meter.record {ms['record']:.2f} ms "
          f"(the ledger row; {ms['record redis']:.2f} in Redis)")  # fmt: skip
    for variant in (METERED, UNMETERED):
        print(f"one {variant} request's Redis round trips:")
        for sent in results.one_request[variant]:
            print(f"  {sent.seconds * 1000:6.2f} ms  {sent.what}")
    report_cpu(results)
    return 0 if ratio_ok and trips_ok else 1


def report_cpu(results: Results) -> None:
    """The machine's CPU a request, by process, summed over all batches of each variant (no target)."""
    if not PROCESS_CPU.available or not all(results.cpu_requests.values()):
        return
    per_request = {
        variant: {role: seconds * 1000 / results.cpu_requests[variant] for role, seconds in spent.items()}
        for variant, spent in results.cpu.items()
    }
    roles = [role for role in (THIS_PROCESS, WEB_METERED, WEB_UNMETERED, POSTGRESQL, REDIS, MODEL_SERVER, OTHER)
             if any(role in spent for spent in per_request.values())]  # fmt: skip
    print("CPU a request, all batches (ms; /proc, 10 ms ticks):")
    print(f"  {'process':<24}{METERED:>10}{UNMETERED:>11}{'difference':>12}")
    for role in roles:
        metered, unmetered = per_request[METERED].get(role, 0.0), per_request[UNMETERED].get(role, 0.0)
        print(f"  {role:<24}{metered:>10.3f}{unmetered:>11.3f}{metered - unmetered:>+12.3f}")
    metered, unmetered = (sum(per_request[variant].values()) for variant in (METERED, UNMETERED))
    print(f"  {'all':<24}{metered:>10.3f}{unmetered:>11.3f}{metered - unmetered:>+12.3f}"
          f"   unmetered / metered = {unmetered / metered:.3f}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
