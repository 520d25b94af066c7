"""The SSRF guard: every URL a tenant supplies is checked before our servers call it.

Threat model
------------
Tenants type URLs that our servers then call: their MCP servers, the base URL of
their own OpenAI-compatible model provider. Without a guard, a tenant could point
such a URL at something only our network can reach and use our servers as a proxy
into it (server-side request forgery): the cloud metadata service
(169.254.169.254, 100.100.100.200, fd00:ec2::254) and the credentials it hands
out, the database, Redis, admin ports on loopback, other hosts on the private
network. Tricks to get past a naive check include IP addresses in odd notations
(``http://2130706433/``, ``http://0177.0.0.1/``, ``http://127.1/``), IPv6 forms
that carry an IPv4 address (``::ffff:127.0.0.1``, 6to4, NAT64, Teredo), host
names that resolve to internal addresses, DNS rebinding (a name that resolves to
a public address when the URL is checked and to an internal one when we
connect), and redirects to internal addresses.

What is checked, when
---------------------
* **At save time**, :func:`check_url` refuses anything but ``http``/``https``
  URLs with a host, without credentials and with a port in 1-65535 if any,
  resolves the host (:func:`resolve`) and refuses the URL if *any* address is
  not allowed (:func:`check_address`).
  It raises :class:`UnsafeURL`, an ``InvalidInput`` the API turns into a 400 with
  a message for the tenant admin. This gives fast, clear feedback; it is not
  what keeps us safe, because DNS answers can change after the check.
* **At connect time**, :func:`guarded_client` and :func:`guarded_async_client`
  build httpx2 clients whose network backend resolves the host itself, checks
  every address with the same policy, and then connects to the checked IP
  address, never to the name, so a second DNS answer cannot swap the address.
  This runs for every new connection, including each redirect hop (redirects
  are not followed unless the caller asks for it). A refused connection raises
  :class:`UnsafeConnection`, which httpx2 surfaces as ``httpx2.ConnectError``
  with the ``UnsafeConnection`` as its ``__cause__`` (see
  :func:`find_unsafe_connection`). TLS still verifies the certificate against the
  host name: httpcore2 passes the URL's host as ``server_hostname`` to
  ``start_tls`` after ``connect_tcp``.

The policy
----------
Only addresses that :mod:`ipaddress` calls global are allowed, and not multicast,
reserved, documentation or benchmarking ones, nor well-known cloud metadata
addresses. IPv6 addresses that embed an IPv4 address (IPv4-mapped,
IPv4-compatible, 6to4, Teredo, NAT64) are judged by the IPv4 address they embed
as well. ``settings.OUTBOUND_ALLOWED_NETWORKS`` (CIDR strings, empty in
production) lists networks that are allowed regardless, so that development and
the tests can reach servers on loopback; it is read on every check.
``manage.py check --deploy`` warns when it is not empty (apps.core.checks).

What a refusal says
-------------------
A refused IP address the tenant wrote (in any notation: ``10.1.2.3``,
``0x0a010203``, ``[::ffff:10.1.2.3]``) is named, with the kind of address it
is. An address a host *name* resolved to is not: the refusal says only what kind
of address the name points to ("db.internal.example points to an address that is
not allowed: a private network address."), on save and at connect time alike,
so a tenant cannot map our internal (split-horizon) DNS one name at a time.
:class:`UnsafeConnection` keeps the address in ``address``, for us.

Resolution has a time limit
---------------------------
Every resolution of a tenant's host, at save time and at connect time, is given
at most ``settings.OUTBOUND_RESOLVE_TIMEOUT_SECONDS`` (and no more than the
connect timeout): a name whose DNS server never answers would otherwise hold a
web thread for the resolver's whole retry schedule. Past it, saving is a 400
("Timed out resolving ...") and connecting an ``httpcore2.ConnectTimeout``.
``getaddrinfo`` cannot be interrupted, so it runs in a pool of
:data:`RESOLVER_THREADS` threads and a lookup past its deadline is left to end
on its own; at most that many lookups run or wait at once, so lookups that hang
cannot pile up (a lookup that finds every slot taken waits for one until its own
deadline).
"""

from __future__ import annotations

import concurrent.futures
import functools
import ipaddress
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpcore2
import httpx2
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from apps.core.exceptions import InvalidInput

__all__ = [
    "GuardedAsyncBackend",
    "GuardedAsyncHTTPTransport",
    "GuardedHTTPTransport",
    "GuardedSyncBackend",
    "UnsafeConnection",
    "UnsafeURL",
    "check_address",
    "check_url",
    "check_url_to_store",
    "connect_error_words",
    "find_unsafe_connection",
    "guarded_async_client",
    "guarded_client",
    "resolve",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = frozenset({"http", "https"})
# What the tenant URL columns hold (McpService.url, ModelProvider.base_url): checked on the normalised URL,
# which percent-encoding and punycode can make longer than what was typed.
MAX_URL_LENGTH = 500
DEFAULT_LIMITS = httpx2.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)


class UnsafeURL(InvalidInput):
    """A URL our servers must not call; ``details`` is ``{field: [message]}``."""

    status_code = 400
    code = "unsafe_url"

    def __init__(self, message: str, *, field: str = "url") -> None:
        super().__init__(message, details={field: [message]})
        self.field = field


class UnsafeConnection(httpcore2.ConnectError):
    """A connection the guard refused: the host resolved to an address that is not allowed.

    httpx2 maps it to ``httpx2.ConnectError`` with the same message and this
    exception as ``__cause__``. The message and ``reason`` reach the tenant, so they name the
    refused ``address`` only when the host is that address (see "What a refusal says");
    ``address`` itself is for us.
    """

    def __init__(self, message: str, *, host: str, address: str | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.host = host
        self.address = address
        self.reason = reason


# --- The address policy ---------------------------------------------------------


class _Kind(NamedTuple):
    """A class of refused address in words: a sentence about "%(address)s", and a phrase without it."""

    naming: str
    general: str


class _Refusal(NamedTuple):
    """Why an address is not allowed, translated: ``naming`` it, and in ``general`` words that do not."""

    naming: str
    general: str


_UNSPECIFIED = _Kind(gettext_noop("%(address)s is an unspecified address."), gettext_noop("an unspecified address"))
_LOOPBACK = _Kind(gettext_noop("%(address)s is a loopback address."), gettext_noop("a loopback address"))
_METADATA = _Kind(
    gettext_noop("%(address)s is a cloud metadata service address."), gettext_noop("a cloud metadata service address")
)
_LINK_LOCAL = _Kind(gettext_noop("%(address)s is a link-local address."), gettext_noop("a link-local address"))
_MULTICAST = _Kind(gettext_noop("%(address)s is a multicast address."), gettext_noop("a multicast address"))
_BROADCAST = _Kind(gettext_noop("%(address)s is the broadcast address."), gettext_noop("the broadcast address"))
_SHARED = _Kind(
    gettext_noop("%(address)s is in the shared address space 100.64.0.0/10 (carrier-grade NAT)."),
    gettext_noop("an address in the shared address space 100.64.0.0/10 (carrier-grade NAT)"),
)
_PRIVATE = _Kind(gettext_noop("%(address)s is a private network address."), gettext_noop("a private network address"))
_SITE_LOCAL = _Kind(gettext_noop("%(address)s is a site-local address."), gettext_noop("a site-local address"))
_DOCUMENTATION = _Kind(
    gettext_noop("%(address)s is reserved for documentation."), gettext_noop("an address reserved for documentation")
)
_BENCHMARKING = _Kind(
    gettext_noop("%(address)s is reserved for benchmarking."), gettext_noop("an address reserved for benchmarking")
)
_RESERVED = _Kind(gettext_noop("%(address)s is a reserved address."), gettext_noop("a reserved address"))
_IPV4_COMPATIBLE = _Kind(
    gettext_noop("%(address)s is a deprecated IPv4-compatible IPv6 address."),
    gettext_noop("a deprecated IPv4-compatible IPv6 address"),
)
_NOT_GLOBAL = _Kind(
    gettext_noop("%(address)s is not a public internet address."),
    gettext_noop("an address outside the public internet"),
)
_EMBEDS = _Kind(
    gettext_noop("%(address)s embeds the IPv4 address %(embedded)s: %(reason)s"),
    gettext_noop("an IPv6 address that embeds %(kind)s"),
)
_NOT_AN_ADDRESS = _Kind(gettext_noop("%(address)s is not an IP address."), gettext_noop("not an IP address"))


def _net(cidr: str) -> IPNetwork:
    return ipaddress.ip_network(cidr)


# Cloud metadata services: AWS/GCP/Azure/Oracle/OpenStack (and AWS's IPv6 one),
# AWS ECS task metadata, Alibaba Cloud, Azure's wire server (a global address!).
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)
_SHARED_SPACE = _net("100.64.0.0/10")
_PRIVATE_NETS = (_net("10.0.0.0/8"), _net("172.16.0.0/12"), _net("192.168.0.0/16"), _net("fc00::/7"))
_DOCUMENTATION_NETS = (
    _net("192.0.2.0/24"),
    _net("198.51.100.0/24"),
    _net("203.0.113.0/24"),
    _net("2001:db8::/32"),
    _net("3fff::/20"),
)
_BENCHMARKING_NETS = (_net("198.18.0.0/15"), _net("2001:2::/48"))
_NAT64_NETS = (_net("64:ff9b::/96"), _net("64:ff9b:1::/48"))
_SIX_TO_FOUR = _net("2002::/16")
_IPV4_COMPATIBLE_NET = _net("::/96")


def _refused(kind: _Kind, shown: str) -> _Refusal:
    return _Refusal(_(kind.naming) % {"address": shown}, _(kind.general))


def _low_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, by any of the transition mechanisms."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if any(address in net for net in _NAT64_NETS):
        return [_low_ipv4(address)]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        server, client = address.teredo
        return [server, client]
    if address in _IPV4_COMPATIBLE_NET and not (address.is_unspecified or address.is_loopback):
        return [_low_ipv4(address)]
    return []


def _classify(address: IPAddress, shown: str) -> _Refusal | None:
    """Why ``address`` (written ``shown``) is not allowed (ignoring the allowlist), or None if it is allowed."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        for inner in embedded:
            why = _classify(inner, str(inner))
            if why is not None:
                naming = _(_EMBEDS.naming) % {"address": shown, "embedded": str(inner), "reason": why.naming}
                return _Refusal(naming, _(_EMBEDS.general) % {"kind": why.general})
        # IPv4-mapped and NAT64 addresses reach exactly the IPv4 address they embed.
        if embedded and (address.ipv4_mapped is not None or address in _NAT64_NETS[0]):
            return None
        if embedded and address in _IPV4_COMPATIBLE_NET:
            return _refused(_IPV4_COMPATIBLE, shown)
    checks: tuple[tuple[bool, _Kind], ...] = (
        (address.is_unspecified, _UNSPECIFIED),
        (address.is_loopback, _LOOPBACK),
        (address in _METADATA_ADDRESSES, _METADATA),
        (address.is_link_local, _LINK_LOCAL),
        (address.is_multicast, _MULTICAST),
        (address == ipaddress.IPv4Address("255.255.255.255"), _BROADCAST),
        (address in _SHARED_SPACE, _SHARED),
        (any(address in net for net in _PRIVATE_NETS), _PRIVATE),
        (isinstance(address, ipaddress.IPv6Address) and address.is_site_local, _SITE_LOCAL),
        (any(address in net for net in _DOCUMENTATION_NETS), _DOCUMENTATION),
        (any(address in net for net in _BENCHMARKING_NETS), _BENCHMARKING),
        (address.is_reserved, _RESERVED),
        (not address.is_global, _NOT_GLOBAL),
    )
    for refused, kind in checks:
        if refused:
            return _refused(kind, shown)
    return None


@functools.lru_cache(maxsize=16)
def _parse_networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    networks: list[IPNetwork] = []
    for cidr in cidrs:
        if not cidr.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError as exc:
            raise ImproperlyConfigured(f"OUTBOUND_ALLOWED_NETWORKS: {cidr!r} is not a network in CIDR form.") from exc
    return tuple(networks)


def _allowed_networks() -> tuple[IPNetwork, ...]:
    return _parse_networks(tuple(getattr(settings, "OUTBOUND_ALLOWED_NETWORKS", None) or ()))


def _in_allowlist(address: IPAddress) -> bool:
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    return any(candidate in network for network in _allowed_networks() for candidate in candidates)


def _parse_ip(ip: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(ip.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def _address_refusal(ip: str) -> _Refusal | None:
    """None if our servers may connect to the IP address ``ip``, else why not, for humans: naming ``ip``, and in
    general words for a host name's address (module docstring, "What a refusal says").

    Allowed are addresses in ``settings.OUTBOUND_ALLOWED_NETWORKS`` and otherwise
    only public internet addresses (see the module docstring).
    """
    address = _parse_ip(ip)
    if address is None:
        return _refused(_NOT_AN_ADDRESS, ip)
    if _in_allowlist(address):
        return None
    return _classify(address, ip.strip())


def check_address(ip: str) -> str | None:
    """None if our servers may connect to the IP address ``ip``, else why not, naming it (:func:`_address_refusal`)."""
    refusal = _address_refusal(ip)
    return None if refusal is None else refusal.naming


# --- Resolution -------------------------------------------------------------------

# A host that inet_aton() (and therefore getaddrinfo()) reads as an IPv4 address:
# one to four dot-separated numbers, each decimal, octal (leading 0) or hex (0x).
_NUMERIC_HOST_RE = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}\.?", re.IGNORECASE)
_LABEL_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_LOCALHOST_ADDRESSES = ("127.0.0.1", "::1")


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address that a non-standard numeric host (``2130706433``, ``0x7f.1``) means, if it is one."""
    if not _NUMERIC_HOST_RE.fullmatch(host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host.rstrip(".")))
    except OSError:
        return None


def _is_hostname(host: str) -> bool:
    name = host.lower().removesuffix(".")
    return 0 < len(name) <= 253 and all(_LABEL_RE.fullmatch(label) for label in name.split("."))


def _is_localhost(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def resolve(host: str, port: int) -> list[str]:
    """The IP addresses ``host`` resolves to (via ``socket.getaddrinfo``), unique, in resolver order.

    Raises ``OSError`` (``socket.gaierror``) if the name does not resolve.
    """
    addresses: list[str] = []
    for _family, _type, _proto, _canonname, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


# getaddrinfo() cannot be interrupted: a lookup runs in a thread of its own and is given up on (left to end
# with the resolver's own retries) once its deadline passes. At most this many lookups are running or waiting
# for a thread, in each process: when lookups that hang hold all of them, the next waits for one until its own
# deadline, so threads and queued lookups cannot pile up without bound.
RESOLVER_THREADS = 32


class _Resolver:
    """The lookup threads of this process, and the slots that bound the lookups running or waiting for one."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="outbound-resolve")
        self.slots = threading.BoundedSemaphore(RESOLVER_THREADS)


_resolver = _Resolver()
# A forked child (a prefork worker) has none of its parent's threads: the parent's pool would queue lookups no
# thread takes, and slots held by the parent's lookups would never come back.
os.register_at_fork(after_in_child=_resolver.start)


def _resolve_timeout(limit: float | None = None) -> float:
    """How long one resolution may take: ``settings.OUTBOUND_RESOLVE_TIMEOUT_SECONDS``, or ``limit`` if shorter."""
    configured = float(settings.OUTBOUND_RESOLVE_TIMEOUT_SECONDS)
    return configured if limit is None else max(0.0, min(configured, limit))


def _resolve_within(host: str, port: int, timeout: float) -> list[str]:
    """:func:`resolve`, given up on after ``timeout`` seconds: then it raises ``TimeoutError``.

    Raises ``OSError`` (``socket.gaierror``) if the name does not resolve in time.
    """
    deadline = time.monotonic() + timeout
    slots = _resolver.slots
    if not slots.acquire(timeout=timeout):
        raise TimeoutError(f"no lookup thread became free within {timeout} s")
    try:
        lookup = _resolver.pool.submit(resolve, host, port)
    except BaseException:
        slots.release()
        raise
    lookup.add_done_callback(lambda _done: slots.release())
    try:
        return lookup.result(timeout=max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        lookup.cancel()  # if it is still waiting for a thread; a running one ends on its own
        raise TimeoutError(f"{host} did not resolve within {timeout} s") from None


# --- Save time: check_url -----------------------------------------------------------


def _host_of_unparsable(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _refusal(problem: str) -> str:
    return _("%(problem)s Only public internet addresses can be used.") % {"problem": problem}


def _numeric_host_refusal(host: str, address: ipaddress.IPv4Address) -> str:
    reason = check_address(str(address))
    if reason is None:
        return _("Write the IP address in the usual dotted form: %(address)s.") % {"address": address}
    message = _("“%(host)s” means the IP address %(address)s. %(reason)s")
    return _refusal(message % {"host": host, "address": address, "reason": reason})


def _parse_url(raw: str) -> httpx2.URL:
    """The URL as httpx2 reads it, if it is an http(s) URL with a host and no credentials; else UnsafeURL."""
    if not raw:
        raise UnsafeURL(_("Enter a URL."))
    try:
        parsed = httpx2.URL(raw)
    except (httpx2.InvalidURL, TypeError, ValueError) as exc:
        # httpx2 refuses e.g. "0177.0.0.1"; name the address it means if it is one (an address already in the
        # usual form is not what was wrong: "1.2.3.4:abc" is a port).
        host = _host_of_unparsable(raw)
        legacy = _legacy_ipv4(host)
        if legacy is not None and str(legacy) != host:
            raise UnsafeURL(_numeric_host_refusal(host, legacy)) from None
        if str(exc).startswith("Invalid port"):
            raise UnsafeURL(_("Use a port from 1 to 65535.")) from None
        raise UnsafeURL(_("This is not a valid URL.")) from None
    if not parsed.scheme:
        raise UnsafeURL(_("Enter a full URL that starts with https:// or http://."))
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise UnsafeURL(_("“%(scheme)s” URLs are not allowed; use https or http.") % {"scheme": parsed.scheme})
    if not parsed.raw_host:
        raise UnsafeURL(_("The URL has no host name."))
    if parsed.userinfo:
        raise UnsafeURL(_("The URL must not contain a user name or password."))
    if parsed.port is not None and not 1 <= parsed.port <= 65535:  # else the connect failed in Python's words
        raise UnsafeURL(_("Use a port from 1 to 65535."))
    return parsed


def _check_host(parsed: httpx2.URL) -> None:
    """Raise UnsafeURL unless every address of the URL's host is allowed."""
    host = parsed.raw_host.decode("ascii")
    if _parse_ip(host) is not None:
        reason = check_address(host)
        if reason is not None:
            raise UnsafeURL(_refusal(reason))
        return
    legacy = _legacy_ipv4(host)
    if legacy is not None:
        raise UnsafeURL(_numeric_host_refusal(host, legacy))
    if not _is_hostname(host):
        raise UnsafeURL(_("“%(host)s” is not a valid host name.") % {"host": parsed.host})
    try:
        addresses = _resolve_within(host, parsed.port or (443 if parsed.scheme == "https" else 80), _resolve_timeout())
    except TimeoutError:  # before OSError, which it is
        raise UnsafeURL(_("Timed out resolving %(host)s.") % {"host": parsed.host}) from None
    except (OSError, UnicodeError):
        addresses = []
    if _is_localhost(host):  # RFC 6761: always loopback, whatever the resolver says
        addresses = [*addresses, *(a for a in _LOCALHOST_ADDRESSES if a not in addresses)]
    if not addresses:
        raise UnsafeURL(_("The host name %(host)s could not be resolved.") % {"host": parsed.host})
    for address in addresses:
        refusal = _address_refusal(address)
        if refusal is not None:  # in general words: which address our resolver answered is not the tenant's to see
            message = _("%(host)s points to an address that is not allowed: %(kind)s.")
            raise UnsafeURL(_refusal(message % {"host": parsed.host, "kind": refusal.general}))


def check_url(url: str, *, field: str = "url") -> str:
    """Check a URL a tenant supplied and return it normalised; raise :class:`UnsafeURL` if we must not call it.

    The URL must be ``http`` or ``https``, have a host, carry no credentials and
    name no port outside 1-65535;
    the host must be an IP address in the usual notation or a name, and every
    address it resolves to (:func:`resolve`) must pass :func:`check_address`. The
    URL is parsed by httpx2, the same parser the clients use, so both see the same
    host. Normalised means as httpx2 writes it, without the fragment. The error's
    ``details`` are ``{field: [message]}``.
    """
    try:
        parsed = _parse_url((url or "").strip())
        _check_host(parsed)
    except UnsafeURL as exc:
        raise UnsafeURL(exc.message, field=field) from None
    return str(parsed.copy_with(fragment=None))


def check_url_to_store(url: str, *, field: str = "url") -> str:
    """:func:`check_url`, and the normalised URL must fit the column (``MAX_URL_LENGTH``).

    Raises :class:`UnsafeURL`, or ``InvalidInput`` (``invalid_input``, not unsafe) for a URL too long.
    """
    checked = check_url(url, field=field)
    if len(checked) > MAX_URL_LENGTH:
        message = _("This URL is %(length)d characters long once encoded; use at most %(max)d.") % {
            "length": len(checked),
            "max": MAX_URL_LENGTH,
        }
        raise InvalidInput(message, details={field: [message]})
    return checked


def same_origin(url: str, other: str) -> bool:
    """Whether two URLs name one origin: scheme, host (without case or a trailing dot) and port (a scheme's default
    port as none). A secret stored for a tenant's server may go where the URL moves only within its origin
    (docs/architecture.md, "Secrets at rest"); a URL that does not parse has no origin."""

    def origin(raw: str) -> tuple[str, str, int | None] | None:
        try:
            parsed = httpx2.URL(raw)
        except (httpx2.InvalidURL, TypeError, ValueError):
            return None
        return parsed.scheme, parsed.host.rstrip("."), parsed.port

    return origin(url) is not None and origin(url) == origin(other)


# --- Connect time: the network backends -----------------------------------------------


def _vet(host: str, port: int, addresses: Iterable[str]) -> list[str]:
    """The addresses to connect to, all checked; raise UnsafeConnection if any is not allowed."""
    checked = list(addresses)
    if not checked:
        raise httpcore2.ConnectError(_("The host name %(host)s could not be resolved.") % {"host": host})
    host_is_address = _parse_ip(host) is not None or _legacy_ipv4(host) is not None
    for address in checked:
        refusal = _address_refusal(address)
        if refusal is None:
            continue
        if host_is_address:
            message = _("Refused to connect to %(host)s port %(port)s: %(reason)s")
            reason = refusal.naming
        else:  # a name: in general words, as on save
            message = _(
                "Refused to connect to %(host)s port %(port)s: it points to an address that is not allowed, %(reason)s."
            )
            reason = refusal.general
        raise UnsafeConnection(
            message % {"host": host, "port": port, "reason": reason}, host=host, address=address, reason=reason
        )
    return checked


def _unresolvable(host: str, exc: BaseException) -> httpcore2.ConnectError:
    message = _("The host name %(host)s could not be resolved.") % {"host": host}
    error = httpcore2.ConnectError(f"{message} ({exc})")
    error.__cause__ = exc
    return error


def _resolve_checked(host: str, port: int, timeout: float | None) -> list[str]:
    """The checked addresses of ``host``, resolved within ``timeout`` and the resolution time limit."""
    if _parse_ip(host) is not None:
        return _vet(host, port, [host])
    try:
        addresses = _resolve_within(host, port, _resolve_timeout(timeout))
    except TimeoutError as exc:  # before OSError, which it is
        raise httpcore2.ConnectTimeout(_("Timed out resolving %(host)s.") % {"host": host}) from exc
    except (OSError, UnicodeError) as exc:
        raise _unresolvable(host, exc) from exc
    return _vet(host, port, addresses)


class GuardedSyncBackend(httpcore2.SyncBackend):
    """httpcore2's sync backend, connecting only to checked IP addresses of the host."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.NetworkStream:
        """Resolve ``host``, check every address, then connect to the first that answers, by IP."""
        deadline = None if timeout is None else time.monotonic() + timeout
        addresses = _resolve_checked(host, port, timeout)
        error: Exception | None = None
        for address in addresses:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise httpcore2.ConnectTimeout(_("Timed out connecting to %(host)s.") % {"host": host})
            try:
                return super().connect_tcp(
                    address, port, timeout=remaining, local_address=local_address, socket_options=socket_options
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.NetworkStream:
        """Never: tenant URLs reach TCP hosts only."""
        raise UnsafeConnection(_("Connections to Unix sockets are not allowed."), host=path)


class GuardedAsyncBackend(httpcore2.AnyIOBackend):
    """httpcore2's AnyIO backend, connecting only to checked IP addresses of the host."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        """Resolve ``host`` (in a worker thread), check every address, then connect to one by IP."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if _parse_ip(host) is not None:
            addresses = _vet(host, port, [host])
        else:
            # The worker thread waits for the lookup in _resolve_within's bounded pool, at most the time limit.
            limit = _resolve_timeout(timeout)
            try:
                resolved = await anyio.to_thread.run_sync(_resolve_within, host, port, limit, abandon_on_cancel=True)
            except TimeoutError as exc:  # before OSError, which it is
                raise httpcore2.ConnectTimeout(_("Timed out resolving %(host)s.") % {"host": host}) from exc
            except (OSError, UnicodeError) as exc:
                raise _unresolvable(host, exc) from exc
            addresses = _vet(host, port, resolved)
        error: Exception | None = None
        for address in addresses:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise httpcore2.ConnectTimeout(_("Timed out connecting to %(host)s.") % {"host": host})
            try:
                return await super().connect_tcp(
                    address, port, timeout=remaining, local_address=local_address, socket_options=socket_options
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        """Never: tenant URLs reach TCP hosts only."""
        raise UnsafeConnection(_("Connections to Unix sockets are not allowed."), host=path)


# anyio's message when no address of a host accepted the connection (refused, unreachable).
_ANYIO_CONNECT_FAILED = "All connection attempts failed"


def connect_error_words(error: BaseException) -> str:
    """Why a connection could not be made, in the request's language: this guard's own words (an address it
    refused, a host name that does not resolve), else that nothing answered at the address (the system's
    "[Errno 111] Connection refused", anyio's "All connection attempts failed")."""
    said = str(error)
    if not said or said.startswith("[Errno") or said == _ANYIO_CONNECT_FAILED:
        return _("Nothing answered at this address: no server is listening there, or it cannot be reached.")
    return said


# --- Connect time: transports and clients -------------------------------------------------


def _replace_pool(transport: httpx2.HTTPTransport | httpx2.AsyncHTTPTransport, expected: type, pool: Any) -> None:
    """Swap the httpcore2 pool httpx2's transport built for ours; fail loudly if httpx2 changed.

    httpx2's transports keep their httpcore2 pool in ``_pool`` and send every
    request through it. If a future httpx2 renamed it, assigning ours would be
    silently ignored and the guard bypassed, so check it is there first.
    """
    current = getattr(transport, "_pool", None)
    if type(current) is not expected:
        raise RuntimeError(
            f"{type(transport).__name__}._pool is {type(current).__name__}, not {expected.__name__}: "
            "httpx2 changed its transport internals, so the SSRF guard cannot be installed."
        )
    transport._pool = pool


def _pool_options(
    ssl_context: ssl.SSLContext, limits: httpx2.Limits, *, http1: bool, http2: bool, retries: int
) -> dict[str, Any]:
    """What httpx2's transports pass to their httpcore2 pool, but the network backend."""
    return {
        "ssl_context": ssl_context,
        "max_connections": limits.max_connections,
        "max_keepalive_connections": limits.max_keepalive_connections,
        "keepalive_expiry": limits.keepalive_expiry,
        "http1": http1,
        "http2": http2,
        "retries": retries,
    }


class GuardedHTTPTransport(httpx2.HTTPTransport):
    """httpx2's transport with a pool that connects through :class:`GuardedSyncBackend`; no proxies, no UDS."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx2.Limits | None = None,
        retries: int = 0,
    ) -> None:
        limits = limits or DEFAULT_LIMITS
        ssl_context = httpx2.create_ssl_context(verify=verify, trust_env=False)
        super().__init__(verify=ssl_context, trust_env=False, http1=http1, http2=http2, limits=limits)
        options = _pool_options(ssl_context, limits, http1=http1, http2=http2, retries=retries)
        pool = httpcore2.ConnectionPool(**options, network_backend=GuardedSyncBackend())
        _replace_pool(self, httpcore2.ConnectionPool, pool)


class GuardedAsyncHTTPTransport(httpx2.AsyncHTTPTransport):
    """httpx2's async transport with a pool that connects through :class:`GuardedAsyncBackend`."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx2.Limits | None = None,
        retries: int = 0,
    ) -> None:
        limits = limits or DEFAULT_LIMITS
        ssl_context = httpx2.create_ssl_context(verify=verify, trust_env=False)
        super().__init__(verify=ssl_context, trust_env=False, http1=http1, http2=http2, limits=limits)
        options = _pool_options(ssl_context, limits, http1=http1, http2=http2, retries=retries)
        pool = httpcore2.AsyncConnectionPool(**options, network_backend=GuardedAsyncBackend())
        _replace_pool(self, httpcore2.AsyncConnectionPool, pool)


def decoded_response(
    response: httpx2.Response, request: httpx2.Request, stream: httpx2.SyncByteStream | httpx2.AsyncByteStream
) -> httpx2.Response:
    """``response`` with ``stream`` as its body, for a transport that hands the body on decoded (to bound what
    would be held, not what came compressed): its ``Content-Encoding`` and ``Content-Length`` go with it."""
    response.request = request
    headers = [(name, value) for name, value in response.headers.multi_items()
               if name.lower() not in ("content-encoding", "content-length")]  # fmt: skip
    return httpx2.Response(
        response.status_code, headers=headers, stream=stream, request=request, extensions=response.extensions
    )


def guarded_client(
    *,
    timeout: float | httpx2.Timeout,
    headers: dict[str, str] | None = None,
    follow_redirects: bool = False,
    wrap_transport: Callable[[httpx2.BaseTransport], httpx2.BaseTransport] | None = None,
) -> httpx2.Client:
    """A sync httpx2 client for tenant-supplied URLs: every connection is checked at connect time.

    No proxies or other settings from the environment (``trust_env=False``) and
    redirects are not followed unless asked; followed ones are checked like any
    other connection. A refused connection raises ``httpx2.ConnectError`` whose
    ``__cause__`` is an :class:`UnsafeConnection`. ``wrap_transport``: as for :func:`guarded_async_client`
    (the model server check's bound on answers).
    """
    transport: httpx2.BaseTransport = GuardedHTTPTransport()
    return httpx2.Client(
        transport=wrap_transport(transport) if wrap_transport else transport,
        timeout=timeout,
        headers=headers,
        follow_redirects=follow_redirects,
        trust_env=False,
    )


def guarded_async_client(
    *,
    timeout: float | httpx2.Timeout,
    headers: dict[str, str] | None = None,
    follow_redirects: bool = False,
    wrap_transport: Callable[[httpx2.AsyncBaseTransport], httpx2.AsyncBaseTransport] | None = None,
) -> httpx2.AsyncClient:
    """The async (AnyIO: asyncio or trio) twin of :func:`guarded_client`, for the MCP SDK.

    ``wrap_transport`` gets the guarded transport and returns the one the client uses: a wrapper that sees
    each request and answer (the MCP client's bound on JSON answers), every connection still guarded.
    """
    transport: httpx2.AsyncBaseTransport = GuardedAsyncHTTPTransport()
    return httpx2.AsyncClient(
        transport=wrap_transport(transport) if wrap_transport else transport,
        timeout=timeout,
        headers=headers,
        follow_redirects=follow_redirects,
        trust_env=False,
    )


def find_unsafe_connection(exc: BaseException | None) -> UnsafeConnection | None:
    """The :class:`UnsafeConnection` behind ``exc``, if a refused connection caused it.

    Follows ``__cause__``/``__context__`` chains and exception groups, so it finds
    the refusal behind ``httpx2.ConnectError``, ``openai.APIConnectionError`` or
    the exception groups the MCP SDK raises.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc] if exc is not None else []
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UnsafeConnection):
            return current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return None
