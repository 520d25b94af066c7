"""The SSRF guard (apps.core.outbound): save-time URL checks and connect-time enforcement.

No external network: host names are made up and resolved by a patched
``apps.core.outbound.resolve``; the servers are real ones on loopback, started
and stopped by the tests. The test settings allow loopback, so every test that
expects a refusal empties ``OUTBOUND_ALLOWED_NETWORKS`` first.
"""

from __future__ import annotations

import asyncio
import datetime
import http.server
import inspect
import ipaddress
import json
import os
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpcore2
import httpx2
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from apps.core import outbound
from apps.core.exceptions import InvalidInput, api_exception_handler
from apps.core.outbound import (
    GuardedAsyncBackend,
    GuardedAsyncHTTPTransport,
    GuardedHTTPTransport,
    GuardedSyncBackend,
    UnsafeConnection,
    UnsafeURL,
    check_address,
    check_url,
    find_unsafe_connection,
    guarded_async_client,
    guarded_client,
)

PUBLIC_IP = "93.184.216.34"
Kind = Literal["sync", "async"]
KINDS: list[Kind] = ["sync", "async"]


# --- Fixtures: a fake resolver, a connection spy, real loopback servers ----------------------


class FakeDNS:
    """Stands in for apps.core.outbound.resolve: answers from a table, records every question."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str] | Callable[[], list[str]]] = {}
        self.questions: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.questions.append(host)
        answer = self.answers.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answer() if callable(answer) else list(answer)


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    fake = FakeDNS()
    monkeypatch.setattr(outbound, "resolve", fake)
    return fake


@pytest.fixture
def no_allowlist(settings: Any) -> None:
    settings.OUTBOUND_ALLOWED_NETWORKS = []


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hosts httpcore2's own backends were asked to connect to (after the guard)."""
    seen: list[str] = []
    sync_connect = httpcore2.SyncBackend.connect_tcp
    async_connect = httpcore2.AnyIOBackend.connect_tcp

    def spy_sync(self: httpcore2.SyncBackend, host: str, port: int, **kwargs: Any) -> httpcore2.NetworkStream:
        seen.append(host)
        return sync_connect(self, host, port, **kwargs)

    async def spy_async(
        self: httpcore2.AnyIOBackend, host: str, port: int, **kwargs: Any
    ) -> httpcore2.AsyncNetworkStream:
        seen.append(host)
        return await async_connect(self, host, port, **kwargs)

    monkeypatch.setattr(httpcore2.SyncBackend, "connect_tcp", spy_sync)
    monkeypatch.setattr(httpcore2.AnyIOBackend, "connect_tcp", spy_async)
    return seen


@dataclass
class Server:
    port: int
    hosts: list[str] = field(default_factory=list)  # the Host header of every request


class _Handler(http.server.BaseHTTPRequestHandler):
    server_record: ClassVar[Server]
    redirect_to: ClassVar[str | None] = None

    def do_GET(self) -> None:
        self.server_record.hosts.append(self.headers.get("Host", ""))
        if self.redirect_to:
            self.send_response(302)
            self.send_header("Location", self.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"hello from loopback"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve(*, redirect_to: str | None = None, tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    """A real HTTP(S) server on 127.0.0.1 and a free port, stopped on exit."""
    record = Server(port=0)
    handler = type("Handler", (_Handler,), {"server_record": record, "redirect_to": redirect_to})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    record.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[Server]:
    with serve() as running:
        yield running


def fetch(
    kind: Kind, url: str, *, follow_redirects: bool = False, verify: ssl.SSLContext | None = None
) -> httpx2.Response:
    """GET ``url`` through the guarded sync or async client; the body is read."""
    if kind == "sync":
        if verify is None:
            client = guarded_client(timeout=5, follow_redirects=follow_redirects)
        else:
            client = httpx2.Client(transport=GuardedHTTPTransport(verify=verify), timeout=5, trust_env=False)
        with client:
            return client.get(url, follow_redirects=follow_redirects)

    async def run() -> httpx2.Response:
        if verify is None:
            async_client = guarded_async_client(timeout=5, follow_redirects=follow_redirects)
        else:
            transport = GuardedAsyncHTTPTransport(verify=verify)
            async_client = httpx2.AsyncClient(transport=transport, timeout=5, trust_env=False)
        async with async_client:
            return await async_client.get(url, follow_redirects=follow_redirects)

    return asyncio.run(run())


def refused(kind: Kind, url: str, **kwargs: Any) -> UnsafeConnection:
    """Fetch ``url``, expect the guard to refuse the connection, and return its refusal."""
    with pytest.raises(httpx2.ConnectError) as caught:
        fetch(kind, url, **kwargs)
    unsafe = caught.value.__cause__
    assert isinstance(unsafe, UnsafeConnection), f"not refused by the guard: {caught.value!r}"
    assert str(caught.value) == str(unsafe)
    assert find_unsafe_connection(caught.value) is unsafe
    return unsafe


def refusal(url: str, **kwargs: Any) -> str:
    with pytest.raises(UnsafeURL) as caught:
        check_url(url, **kwargs)
    return caught.value.message


# --- check_url: what a tenant may save -----------------------------------------------------

FORBIDDEN_URLS = [
    ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://127.1/", "127.0.0.1 is a loopback address"),
    ("http://2130706433/", "127.0.0.1 is a loopback address"),
    ("http://0177.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://0x7f.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://0x7f000001/", "127.0.0.1 is a loopback address"),
    ("http://127.0.0.1./", "127.0.0.1 is a loopback address"),
    ("http://[::1]/", "::1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]/", "127.0.0.1 is a loopback address"),
    ("http://[::ffff:7f00:1]/", "127.0.0.1 is a loopback address"),
    ("http://[::7f00:1]/", "127.0.0.1 is a loopback address"),  # IPv4-compatible
    ("http://10.0.0.1/", "10.0.0.1 is a private network address"),
    ("http://172.16.5.4/", "172.16.5.4 is a private network address"),
    ("http://192.168.1.1/", "192.168.1.1 is a private network address"),
    ("http://[fd12:3456::1]/", "fd12:3456::1 is a private network address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata service address"),
    ("http://169.254.1.1/", "169.254.1.1 is a link-local address"),
    ("http://[fd00:ec2::254]/", "fd00:ec2::254 is a cloud metadata service address"),
    ("http://100.100.100.200/", "100.100.100.200 is a cloud metadata service address"),
    ("http://100.64.0.1/", "shared address space 100.64.0.0/10"),
    ("http://224.0.0.1/", "224.0.0.1 is a multicast address"),
    ("http://[ff0e::1]/", "ff0e::1 is a multicast address"),
    ("http://0.0.0.0/", "0.0.0.0 is an unspecified address"),
    ("http://0/", "0.0.0.0 is an unspecified address"),
    ("http://[::]/", ":: is an unspecified address"),
    ("http://240.0.0.1/", "240.0.0.1 is a reserved address"),
    ("http://255.255.255.255/", "255.255.255.255 is the broadcast address"),
    ("http://192.0.2.10/", "192.0.2.10 is reserved for documentation"),
    ("http://198.18.0.1/", "198.18.0.1 is reserved for benchmarking"),
    ("http://[fe80::1]/", "fe80::1 is a link-local address"),
    ("http://[2002:7f00:1::]/", "127.0.0.1 is a loopback address"),  # 6to4
    ("http://[2002:a9fe:a9fe::1]/", "169.254.169.254 is a cloud metadata service address"),  # 6to4
    ("http://[64:ff9b::a00:1]/", "10.0.0.1 is a private network address"),  # NAT64
    ("http://[64:ff9b::7f00:1]/", "127.0.0.1 is a loopback address"),  # NAT64
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "127.0.0.1 is a loopback address"),  # Teredo client
]


@pytest.mark.usefixtures("no_allowlist")
@pytest.mark.parametrize(("url", "reason"), FORBIDDEN_URLS)
def test_forbidden_addresses_are_refused(url: str, reason: str) -> None:
    message = refusal(url)
    assert reason in message
    assert "Only public internet addresses can be used." in message


@pytest.mark.usefixtures("no_allowlist")
@pytest.mark.parametrize("url", ["http://2130706433/", "http://0177.0.0.1/", "http://0x7f000001/", "http://127.1/"])
def test_odd_ipv4_notations_are_refused_even_if_resolution_lies(url: str, dns: FakeDNS) -> None:
    dns.answers = {name: [PUBLIC_IP] for name in ("2130706433", "0177.0.0.1", "0x7f000001", "127.1")}
    assert "127.0.0.1 is a loopback address" in refusal(url)


@pytest.mark.usefixtures("no_allowlist")
def test_odd_notation_of_a_public_address_is_refused_too(dns: FakeDNS) -> None:
    dns.answers = {"1572395042": [PUBLIC_IP]}
    assert refusal("http://1572395042/") == f"Write the IP address in the usual dotted form: {PUBLIC_IP}."


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "“file” URLs are not allowed; use https or http."),
        ("ftp://example.com/", "“ftp” URLs are not allowed; use https or http."),
        ("gopher://x/", "“gopher” URLs are not allowed; use https or http."),
        ("javascript:alert(1)", "“javascript” URLs are not allowed; use https or http."),
        ("data:text/plain,hi", "“data” URLs are not allowed; use https or http."),
        ("ws://example.com/", "“ws” URLs are not allowed; use https or http."),
        ("example.com/mcp", "Enter a full URL that starts with https:// or http://."),
        ("//example.com/mcp", "Enter a full URL that starts with https:// or http://."),
        ("http:///mcp", "The URL has no host name."),
        ("https://", "The URL has no host name."),
        ("http://user:pass@example.com/", "The URL must not contain a user name or password."),
        ("http://token@example.com/", "The URL must not contain a user name or password."),
        ("", "Enter a URL."),
        ("http://exa mple.com/", "“exa%20mple.com” is not a valid host name."),
        # A port the socket cannot take: the connect failed with "OverflowError: connect(): port must be 0-65535".
        ("http://example.com:99999/", "Use a port from 1 to 65535."),
        ("http://example.com:0/", "Use a port from 1 to 65535."),
        ("http://example.com:abc/", "Use a port from 1 to 65535."),
        # An address in the usual form is not what was wrong (it was told to write it in the usual form).
        (f"http://{PUBLIC_IP}:abc/mcp", "Use a port from 1 to 65535."),
        (f"http://a\n@{PUBLIC_IP}/", "This is not a valid URL."),
    ],
)
def test_only_plain_http_urls_with_a_host_are_accepted(url: str, message: str, dns: FakeDNS) -> None:
    dns.answers = {"example.com": [PUBLIC_IP]}
    assert refusal(url) == message
    assert dns.questions == []  # refused before any DNS lookup


@pytest.mark.usefixtures("no_allowlist")
def test_a_name_that_resolves_to_a_private_address_is_refused(dns: FakeDNS) -> None:
    dns.answers = {"mcp.tenant.test": ["192.168.0.10"]}
    assert refusal("https://mcp.tenant.test/mcp") == (
        "mcp.tenant.test points to an address that is not allowed: a private network address. "
        "Only public internet addresses can be used."
    )


@pytest.mark.usefixtures("no_allowlist")
def test_a_name_with_any_private_address_is_refused(dns: FakeDNS) -> None:
    dns.answers = {"mixed.test": [PUBLIC_IP, "2606:2800:220:1:248:1893:25c8:1946", "10.0.0.5"]}
    assert "not allowed: a private network address." in refusal("https://mixed.test/")


@pytest.mark.usefixtures("no_allowlist")
def test_localhost_is_loopback_whatever_the_resolver_says(dns: FakeDNS) -> None:
    dns.answers = {"localhost": [PUBLIC_IP], "app.localhost": [PUBLIC_IP]}
    assert "localhost points to an address that is not allowed: a loopback address." in refusal("http://localhost/")
    assert "app.localhost points to an address that is not allowed: a loopback address." in refusal(
        "http://app.localhost/"
    )


# What our resolver answered for a name is not the tenant's to learn (split-horizon DNS could be mapped one name
# at a time); an address the tenant wrote, in any notation, is named.
NAMED_BY_WHAT_THEY_RESOLVE_TO = [
    ("10.1.2.3", "a private network address"),
    ("fd12:3456::9", "a private network address"),
    ("169.254.169.254", "a cloud metadata service address"),
    ("::ffff:10.1.2.3", "an IPv6 address that embeds a private network address"),
    ("2002:a01:203::1", "an IPv6 address that embeds a private network address"),  # 6to4
    ("100.64.7.8", "an address in the shared address space 100.64.0.0/10 (carrier-grade NAT)"),
]


def hidden_parts(address: str) -> set[str]:
    """The address and any IPv4 address it embeds."""
    parsed = ipaddress.ip_address(address)
    if isinstance(parsed, ipaddress.IPv4Address):
        return {address}
    return {address, *(str(inner) for inner in outbound._embedded_ipv4(parsed))}


@pytest.mark.usefixtures("no_allowlist")
@pytest.mark.parametrize(("address", "kind"), NAMED_BY_WHAT_THEY_RESOLVE_TO)
def test_a_refused_name_does_not_reveal_its_address(address: str, kind: str, dns: FakeDNS) -> None:
    dns.answers = {"db.internal.test": [address]}
    with pytest.raises(UnsafeURL) as caught:
        check_url("http://db.internal.test/", field="base_url")
    response = api_exception_handler(caught.value, {})
    assert response is not None
    said = json.dumps(response.data)
    assert caught.value.message == (
        f"db.internal.test points to an address that is not allowed: {kind}. "
        "Only public internet addresses can be used."
    )
    for part in hidden_parts(address):
        assert part not in said, part


@pytest.mark.usefixtures("no_allowlist")
@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://10.1.2.3/", "10.1.2.3 is a private network address."),
        ("http://0x0a010203/", "“0x0a010203” means the IP address 10.1.2.3. 10.1.2.3 is a private network address."),
        ("http://012.1.2.3/", "“012.1.2.3” means the IP address 10.1.2.3. 10.1.2.3 is a private network address."),
        ("http://167838211/", "“167838211” means the IP address 10.1.2.3. 10.1.2.3 is a private network address."),
        ("http://[fd12:3456::9]/", "fd12:3456::9 is a private network address."),
        ("http://[::ffff:10.1.2.3]/", "::ffff:10.1.2.3 embeds the IPv4 address 10.1.2.3: 10.1.2.3 is a private"),
    ],
)
def test_a_refused_address_the_tenant_wrote_is_named(url: str, named: str, dns: FakeDNS) -> None:
    with pytest.raises(UnsafeURL) as caught:
        check_url(url)
    response = api_exception_handler(caught.value, {})
    assert response is not None
    assert named in json.dumps(response.data, ensure_ascii=False)
    assert dns.questions == []


@pytest.mark.usefixtures("no_allowlist")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("address", "words"), NAMED_BY_WHAT_THEY_RESOLVE_TO)
def test_a_name_refused_at_connect_time_does_not_reveal_its_address(
    kind: Kind, address: str, words: str, dns: FakeDNS, connects: list[str]
) -> None:
    dns.answers = {"db.internal.test": [address]}
    unsafe = refused(kind, "http://db.internal.test:8080/")
    said = f"Refused to connect to db.internal.test port 8080: it points to an address that is not allowed, {words}."
    assert (str(unsafe), unsafe.reason, unsafe.address) == (said, words, address)
    assert not any(part in str(unsafe) for part in hidden_parts(address))
    assert connects == []


@pytest.mark.usefixtures("no_allowlist")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("host", "said"),
    [
        ("10.1.2.3", "10.1.2.3 is a private network address."),
        ("[fd12:3456::9]", "fd12:3456::9 is a private network address."),
        ("167838211", "10.1.2.3 is a private network address."),  # a redirect's Location can write it so
    ],
)
def test_an_address_refused_at_connect_time_is_named(kind: Kind, host: str, said: str, connects: list[str]) -> None:
    unsafe = refused(kind, f"http://{host}:8080/")
    assert said in str(unsafe)
    assert connects == []


def test_a_name_that_does_not_resolve_is_refused(dns: FakeDNS) -> None:
    assert refusal("https://nowhere.test/v1") == "The host name nowhere.test could not be resolved."
    dns.answers = {"empty.test": []}
    assert refusal("https://empty.test/v1") == "The host name empty.test could not be resolved."


@pytest.mark.usefixtures("no_allowlist")
def test_a_public_address_passes_and_comes_back_normalised(dns: FakeDNS) -> None:
    dns.answers = {"models.provider.test": [PUBLIC_IP, "2606:2800:220:1:248:1893:25c8:1946"]}
    assert check_url("  HTTPS://Models.Provider.TEST:443/v1?x=1#frag ") == "https://models.provider.test/v1?x=1"
    assert dns.questions == ["models.provider.test"]
    assert check_url(f"http://{PUBLIC_IP}:8080/mcp") == f"http://{PUBLIC_IP}:8080/mcp"
    assert check_url("http://[2606:4700:4700::1111]/") == "http://[2606:4700:4700::1111]/"
    assert check_url("http://[64:ff9b::5db8:d822]/") == "http://[64:ff9b::5db8:d822]/"  # NAT64 of a public IPv4
    dns.answers["xn--mnchen-3ya.test"] = [PUBLIC_IP]
    assert check_url("https://münchen.test/") == "https://xn--mnchen-3ya.test/"
    assert check_url(f"http://{PUBLIC_IP}:65535/") == f"http://{PUBLIC_IP}:65535/"
    assert check_url(f"http://{PUBLIC_IP}:1/") == f"http://{PUBLIC_IP}:1/"


def test_the_allowlist_lets_listed_networks_through(dns: FakeDNS) -> None:
    with override_settings(OUTBOUND_ALLOWED_NETWORKS=["127.0.0.0/8"]):
        assert check_url("http://127.0.0.1:8765/mcp") == "http://127.0.0.1:8765/mcp"
        assert check_url("http://[::ffff:127.0.0.1]:8765/") == "http://[::ffff:127.0.0.1]:8765/"
        assert "10.0.0.1 is a private network address" in refusal("http://10.0.0.1/")
        assert "::1 is a loopback address" in refusal("http://[::1]/")


def test_the_test_settings_allow_loopback_only() -> None:
    assert check_url("http://127.0.0.1:8001/mcp") == "http://127.0.0.1:8001/mcp"
    assert check_url("http://[::1]:8001/") == "http://[::1]:8001/"
    assert "169.254.169.254 is a cloud metadata service address" in refusal("http://169.254.169.254/")


def test_a_broken_allowlist_is_a_configuration_error() -> None:
    with override_settings(OUTBOUND_ALLOWED_NETWORKS=["10.0.0.0/33"]), pytest.raises(ImproperlyConfigured):
        check_address("10.0.0.1")


@pytest.mark.usefixtures("no_allowlist")
def test_unsafe_url_is_invalid_input_for_the_named_field() -> None:
    with pytest.raises(UnsafeURL) as caught:
        check_url("http://10.0.0.1/", field="base_url")
    error = caught.value
    assert isinstance(error, InvalidInput)
    assert (error.code, error.status_code) == ("unsafe_url", 400)
    assert error.details == {"base_url": [error.message]}
    response = api_exception_handler(error, {})
    assert response is not None
    assert response.status_code == 400
    assert response.data == {"error": {"code": "unsafe_url", "message": error.message, "details": error.details}}


# --- check_address and resolve ----------------------------------------------------------


@pytest.mark.usefixtures("no_allowlist")
@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        (PUBLIC_IP, None),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("2002:5db8:d822::1", None),  # 6to4 of a public address
        ("::ffff:93.184.216.34", None),
        ("127.0.0.1", "127.0.0.1 is a loopback address."),
        ("168.63.129.16", "168.63.129.16 is a cloud metadata service address."),
        ("100.127.255.254", "100.127.255.254 is in the shared address space 100.64.0.0/10 (carrier-grade NAT)."),
        ("::5db8:d822", "::5db8:d822 is a deprecated IPv4-compatible IPv6 address."),
        ("2001:db8::1", "2001:db8::1 is reserved for documentation."),
        ("fec0::1", "fec0::1 is a site-local address."),
        ("::ffff:10.1.2.3", "::ffff:10.1.2.3 embeds the IPv4 address 10.1.2.3: 10.1.2.3 is a private network address."),
        ("not-an-ip", "not-an-ip is not an IP address."),
    ],
)
def test_check_address(ip: str, expected: str | None) -> None:
    assert check_address(ip) == expected


def test_resolve_uses_getaddrinfo_which_reads_every_ipv4_notation() -> None:
    """No DNS involved: getaddrinfo reads these itself."""
    assert outbound.resolve("127.0.0.1", 80) == ["127.0.0.1"]
    assert outbound.resolve("2130706433", 80) == ["127.0.0.1"]
    assert outbound.resolve("0x7f.1", 443) == ["127.0.0.1"]
    assert outbound.resolve("::1", 80) == ["::1"]


# --- The time limit on resolution ----------------------------------------------------------


class HangingResolver:
    """Stands in for socket.getaddrinfo: for names under .test, a DNS server that never answers (until the test
    ends); other hosts (the tests' own Redis) resolve as ever."""

    def __init__(self) -> None:
        self.answer = threading.Event()
        self.questions: list[str] = []
        self.getaddrinfo = socket.getaddrinfo

    def __call__(self, host: str, *args: Any, **kwargs: Any) -> Any:
        if not host.endswith(".test"):
            return self.getaddrinfo(host, *args, **kwargs)
        self.questions.append(host)
        self.answer.wait(timeout=10)  # the resolver's own retries give up in the end
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")


@pytest.fixture
def hanging_dns(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[HangingResolver]:
    settings.OUTBOUND_RESOLVE_TIMEOUT_SECONDS = 0.3
    resolver = HangingResolver()
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    yield resolver
    resolver.answer.set()


@contextmanager
def takes_about(seconds: float) -> Iterator[None]:
    started = time.monotonic()
    yield
    took = time.monotonic() - started
    assert seconds - 0.05 <= took < seconds + 1.0, f"took {took:.2f} s, not about {seconds} s"


def test_a_name_that_does_not_resolve_in_time_is_refused_on_save(hanging_dns: HangingResolver) -> None:
    with takes_about(0.3), pytest.raises(UnsafeURL) as caught:
        check_url("https://slow-dns.test/mcp", field="base_url")
    assert caught.value.message == "Timed out resolving slow-dns.test."
    assert hanging_dns.questions == ["slow-dns.test"]
    response = api_exception_handler(caught.value, {})
    assert response is not None
    assert response.status_code == 400
    assert response.data == {
        "error": {
            "code": "unsafe_url",
            "message": "Timed out resolving slow-dns.test.",
            "details": {"base_url": ["Timed out resolving slow-dns.test."]},
        }
    }


@pytest.mark.parametrize("kind", KINDS)
def test_a_name_that_does_not_resolve_in_time_is_a_connect_timeout(kind: Kind, hanging_dns: HangingResolver) -> None:
    with takes_about(0.3), pytest.raises(httpx2.ConnectTimeout, match=r"Timed out resolving slow-dns\.test\."):
        fetch(kind, "http://slow-dns.test/")  # the client's own timeout is 5 s
    assert hanging_dns.questions == ["slow-dns.test"]


def test_lookups_that_hang_cannot_pile_up(hanging_dns: HangingResolver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbound._resolver, "slots", threading.BoundedSemaphore(2))
    for name in ("one.test", "two.test", "three.test"):
        with takes_about(0.3), pytest.raises(UnsafeURL, match="Timed out resolving"):
            check_url(f"https://{name}/")
    assert hanging_dns.questions == ["one.test", "two.test"]  # the third found no free slot and waited in vain


def test_a_forked_child_resolves_with_threads_of_its_own(
    hanging_dns: HangingResolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prefork worker inherits no threads: neither the parent's idle lookup thread nor the slots its lookups
    that hang still hold may stand in the child's way."""
    monkeypatch.setattr(outbound._resolver, "slots", threading.BoundedSemaphore(2))
    assert outbound._resolve_within("127.0.0.1", 80, 2.0) == ["127.0.0.1"]  # leaves a thread idle
    for name in ("one.test", "two.test"):  # hold every slot
        with pytest.raises(UnsafeURL, match="Timed out resolving"):
            check_url(f"https://{name}/")
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "this process is multi-threaded": the child execs nothing
        child = os.fork()
    if child == 0:
        try:
            said = repr(outbound._resolve_within("127.0.0.1", 80, 1.0))
        except BaseException as exc:
            said = repr(exc)
        os.write(write, said.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        said = answer.read()
    os.waitpid(child, 0)
    assert said == "['127.0.0.1']"


# --- Connect time: the guarded clients --------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_dns_rebinding_is_refused_at_connect_time(
    kind: Kind, server: Server, dns: FakeDNS, connects: list[str], settings: Any
) -> None:
    answers = iter([[PUBLIC_IP]])
    dns.answers = {"rebind.test": lambda: next(answers, ["127.0.0.1"])}
    url = f"http://rebind.test:{server.port}/"

    settings.OUTBOUND_ALLOWED_NETWORKS = []
    assert check_url(url) == url  # public when the tenant saves it ...
    unsafe = refused(kind, url)  # ... loopback when we connect
    assert (unsafe.host, unsafe.address) == ("rebind.test", "127.0.0.1")
    assert str(unsafe) == (
        f"Refused to connect to rebind.test port {server.port}: "
        "it points to an address that is not allowed, a loopback address."
    )
    assert connects == []
    assert server.hosts == []

    # Allowed, the same request connects to the address the guard checked, by IP;
    # the Host header still names the host.
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    response = fetch(kind, url)
    assert (response.status_code, response.text) == (200, "hello from loopback")
    assert connects == ["127.0.0.1"]
    assert server.hosts == [f"rebind.test:{server.port}"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_address_of_the_host_is_checked_at_connect_time(
    kind: Kind, server: Server, dns: FakeDNS, connects: list[str], settings: Any
) -> None:
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    dns.answers = {"mixed.test": ["127.0.0.1", "10.9.8.7"]}
    unsafe = refused(kind, f"http://mixed.test:{server.port}/")
    assert unsafe.address == "10.9.8.7"
    assert connects == []


@pytest.mark.parametrize("kind", KINDS)
def test_odd_ipv4_notation_is_resolved_and_checked_at_connect_time(
    kind: Kind, server: Server, connects: list[str], settings: Any
) -> None:
    url = f"http://2130706433:{server.port}/"  # the real getaddrinfo reads it as 127.0.0.1
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    assert refused(kind, url).address == "127.0.0.1"
    assert connects == []
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    assert fetch(kind, url).status_code == 200
    assert connects == ["127.0.0.1"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_unresolvable_host_is_a_plain_connect_error(kind: Kind, dns: FakeDNS) -> None:
    with pytest.raises(httpx2.ConnectError, match=r"nowhere\.test could not be resolved") as caught:
        fetch(kind, "http://nowhere.test/")
    assert find_unsafe_connection(caught.value) is None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://10.1.2.3/", "10.1.2.3 is a private network address."),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata service address."),
    ],
)
def test_redirects_to_forbidden_addresses_are_refused(
    kind: Kind, target: str, reason: str, connects: list[str], settings: Any
) -> None:
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    with serve(redirect_to=target) as redirecting:
        url = f"http://127.0.0.1:{redirecting.port}/start"

        response = fetch(kind, url)  # not followed by default
        assert response.status_code == 302
        assert response.headers["Location"] == target
        assert response.next_request is not None

        unsafe = refused(kind, url, follow_redirects=True)
        assert unsafe.reason == reason
        assert connects == ["127.0.0.1", "127.0.0.1"]  # never to the redirect target
        assert len(redirecting.hosts) == 2


def _tls_contexts(directory: Path, hostname: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A throwaway CA and a certificate for ``hostname``: (server context, client context trusting the CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "outbound test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = directory / "leaf.pem", directory / "leaf.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    client_context = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server_context, client_context


@pytest.mark.parametrize("kind", KINDS)
def test_tls_verifies_the_host_name_while_connecting_by_ip(
    kind: Kind, tmp_path: Path, dns: FakeDNS, connects: list[str], settings: Any
) -> None:
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    server_context, client_context = _tls_contexts(tmp_path, "tls.test")
    dns.answers = {"tls.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}
    with serve(tls=server_context) as running:
        response = fetch(kind, f"https://tls.test:{running.port}/", verify=client_context)
        assert (response.status_code, response.text) == (200, "hello from loopback")
        assert connects == ["127.0.0.1"]

        # Same IP, another name: the certificate is checked against the name, so it fails.
        with pytest.raises(httpx2.ConnectError, match="certificate verify failed"):
            fetch(kind, f"https://other.test:{running.port}/", verify=client_context)


# --- What the SDKs see -------------------------------------------------------------------------


@pytest.mark.usefixtures("no_allowlist")
def test_openai_sees_a_connection_error_caused_by_the_refusal(server: Server, dns: FakeDNS) -> None:
    import openai

    dns.answers = {"models.test": ["127.0.0.1"]}
    client = openai.OpenAI(
        base_url=f"http://models.test:{server.port}/v1",
        api_key="unused",
        max_retries=0,
        http_client=guarded_client(timeout=5),
    )
    with client, pytest.raises(openai.APIConnectionError) as caught:
        client.models.list()
    unsafe = find_unsafe_connection(caught.value)
    assert unsafe is not None
    assert unsafe.reason == "a loopback address"
    assert server.hosts == []


@pytest.mark.usefixtures("no_allowlist")
def test_the_mcp_sdk_sees_an_exception_group_holding_the_refusal(server: Server, dns: FakeDNS) -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    dns.answers = {"tools.test": ["10.0.0.7"]}

    async def run() -> None:
        async with (
            guarded_async_client(timeout=5) as http_client,
            streamable_http_client("http://tools.test/mcp", http_client=http_client) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()

    with pytest.raises(BaseExceptionGroup) as caught:
        asyncio.run(asyncio.wait_for(run(), timeout=10))
    unsafe = find_unsafe_connection(caught.value)
    assert unsafe is not None
    assert unsafe.reason == "a private network address"


# --- The httpx2/httpcore2 internals the guard relies on ---------------------------------------


def test_httpx2_transports_still_keep_an_httpcore2_pool_in_pool() -> None:
    """GuardedHTTPTransport swaps ``_pool``; if httpx2 renames it or builds another pool, this fails."""
    assert type(httpx2.HTTPTransport()._pool) is httpcore2.ConnectionPool
    assert type(httpx2.AsyncHTTPTransport()._pool) is httpcore2.AsyncConnectionPool
    for pool in (httpcore2.ConnectionPool, httpcore2.AsyncConnectionPool):
        assert "network_backend" in inspect.signature(pool).parameters


def test_httpx2_transports_send_through_whatever_pool_is_in_pool() -> None:
    """A pool swapped into ``_pool`` after construction is the one requests go through."""
    reply = [b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nswapped"]
    transport = httpx2.HTTPTransport()
    transport._pool = httpcore2.ConnectionPool(network_backend=httpcore2.MockBackend(reply))
    with httpx2.Client(transport=transport) as client:
        assert client.get("http://pool.test/").text == "swapped"

    async def run() -> str:
        async_transport = httpx2.AsyncHTTPTransport()
        async_transport._pool = httpcore2.AsyncConnectionPool(network_backend=httpcore2.AsyncMockBackend(reply))
        async with httpx2.AsyncClient(transport=async_transport) as async_client:
            return (await async_client.get("http://pool.test/")).text

    assert asyncio.run(run()) == "swapped"


def test_the_guarded_transports_use_the_guarded_backends() -> None:
    sync_pool = GuardedHTTPTransport()._pool
    async_pool = GuardedAsyncHTTPTransport()._pool
    assert isinstance(sync_pool._network_backend, GuardedSyncBackend)
    assert isinstance(async_pool._network_backend, GuardedAsyncBackend)
    client = guarded_client(timeout=1)
    assert isinstance(client._transport, GuardedHTTPTransport)
    assert client._mounts == {}  # no proxies from the environment
    assert (client.trust_env, client.follow_redirects) == (False, False)
    client.close()


def test_a_transport_without_the_expected_pool_refuses_to_build() -> None:
    class Changed(httpx2.HTTPTransport):
        def __init__(self) -> None:
            super().__init__()
            self._connection_pool = self._pool
            del self._pool

    with pytest.raises(RuntimeError, match="SSRF guard cannot be installed"):
        outbound._replace_pool(Changed(), httpcore2.ConnectionPool, object())


@pytest.mark.parametrize("kind", KINDS)
def test_unix_sockets_are_refused(kind: Kind) -> None:
    if kind == "sync":
        with pytest.raises(UnsafeConnection):
            GuardedSyncBackend().connect_unix_socket("/run/postgresql/.s.PGSQL.5432")
    else:
        with pytest.raises(UnsafeConnection):
            asyncio.run(GuardedAsyncBackend().connect_unix_socket("/run/postgresql/.s.PGSQL.5432"))
