"""Writes to MCP services: add, change, test, enable, disable, delete. Each is audited."""

from __future__ import annotations

import enum
import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any, Final

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import Http404
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from apps.audit.services import audit_record
from apps.core.actors import Actor
from apps.core.crypto import encrypt
from apps.core.exceptions import ApplicationError, InvalidInput, QuotaExceeded, fields_refused
from apps.core.languages import in_each_language
from apps.core.models import storable
from apps.core.outbound import check_url_to_store, same_origin
from apps.core.text import has_control_characters
from apps.llm.setup_cache import ai_setup_forget
from apps.mcp import client
from apps.mcp.models import McpService, Transport
from apps.mcp.selectors import mcp_service_count_active
from apps.tenants.selectors import tenant_current_locked
from apps.usage.limits import limits_for
from apps.usage.services import quota_check_count_alerts

# Words joined by single underscores: "__" separates a service's slug from its tools' names (apps.mcp.tool_names).
# All three are used with fullmatch: "$" also matches before a final newline, which let "X-A\n" through.
_SLUG_MAX_LENGTH = 30
_SLUG_RE = re.compile(r"(?=.{1,30}\Z)[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
# Printable ASCII: the HTTP client encodes header values as ASCII, and a value it cannot failed every connect.
_HEADER_VALUE_RE = re.compile(r"[\x20-\x7e]{0,4096}")
# Headers the HTTP client and the MCP SDK set for the request to work: a service's own would break it, or
# (Host) choose another site behind an address the SSRF guard allowed.
_CONNECTION_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "keep-alive",
    "proxy-connection", "proxy-authorization", "content-type", "accept", "mcp-session-id", "mcp-protocol-version",
    "last-event-id",
})  # fmt: skip
# Auth headers are stored encrypted and sent with every call: at most this many, of at most this many characters
# in all (names and values): servers take 8 KiB (Tomcat, Jetty) to 16 KiB (Node) of a request's headers, and
# refuse more (431), which would fail every call.
MAX_HEADERS = 20
MAX_HEADERS_CHARS = 8 * 1024
MAX_TIMEOUT_SECONDS = 120


class _Default(enum.Enum):
    VALUE = "default"


# A field set back to its default (the API's null), where None leaves it as it is.
DEFAULT: Final = _Default.VALUE


def _check_service_quota(*, adding: int = 1) -> None:
    """Active MCP services may not pass the plan's limit."""
    limit = limits_for(tenant_current_locked()).mcp_services
    if limit is None:
        return
    used = mcp_service_count_active()
    if used + adding > limit:
        raise QuotaExceeded(
            ngettext(
                "The workspace allows %(limit)s active MCP service.",
                "The workspace allows %(limit)s active MCP services.",
                limit,
            )
            % {"limit": number_format(limit, force_grouping=True)},  # grouped, as every quota's refusal
            details={"quota": "mcp_services", "limit": limit, "used": used, "resets_at": None},
        )
    quota_check_count_alerts(quota="mcp_services", limit=limit, used_before=used, used_after=used + adding)


def _slug_for(name: str) -> str:
    """A free slug made from ``name`` that keeps the rule a given slug is held to (``_SLUG_RE``): each cut is
    followed by a strip, or it could end in ``_`` and a suffix make ``__``, and the model's names for two
    services' tools could meet (``x_`` + ``__a`` and ``x`` + ``__`` + ``_a``)."""
    words = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    if words and not words[0].isalpha():
        words = f"s_{words}"
    base = words[:24].rstrip("_") or "service"
    slug, n = base, 2
    while McpService.objects.filter(slug=slug).exists():
        suffix = f"_{n}"
        slug, n = base[: _SLUG_MAX_LENGTH - len(suffix)].rstrip("_") + suffix, n + 1
    return slug


def _valid_fields(
    *, name: str | None, url: str | None, type: str | None, timeout_seconds: int | None, headers: dict[str, str] | None
) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    clean: dict[str, Any] = {}
    url_refused: InvalidInput | None = None
    if name is not None:
        name = name.strip()
        if not name or len(name) > 100:
            errors["name"] = [_("Use 1 to 100 characters.")]
        elif has_control_characters(name):  # as conversation titles (apps.chat)
            errors["name"] = [_("A name cannot hold control characters.")]
        clean["name"] = name
    if url is not None:
        try:
            clean["url"] = check_url_to_store(url.strip(), field="url")
        except InvalidInput as exc:  # UnsafeURL too
            url_refused = exc
            errors.update(exc.details)
    if type is not None:
        if type not in Transport.values:
            errors["type"] = [_("Choose streamable-http or sse.")]
        clean["type"] = type
    if timeout_seconds is not None:
        if not 1 <= timeout_seconds <= MAX_TIMEOUT_SECONDS:
            errors["timeout_seconds"] = [_("Use 1 to %(max)d seconds.") % {"max": MAX_TIMEOUT_SECONDS}]
        clean["timeout_seconds"] = timeout_seconds
    if headers is not None:
        if problem := _headers_problem(headers):
            errors["headers"] = [problem]
        clean["headers"] = {str(k): str(v) for k, v in headers.items()}
    if errors:
        raise fields_refused(errors, alone=url_refused)  # the URL alone: its own message (unsafe_url: docs/api.md)
    return clean


def _headers_problem(headers: dict[str, str]) -> str | None:
    """Why the client could not send these auth headers, or None if it can. Counted first: a body of 2.5 MB holds
    a hundred thousand."""
    if len(headers) > MAX_HEADERS:
        return _("Give at most %(most)d auth headers.") % {"most": MAX_HEADERS}
    bad = [h for h in headers if not _HEADER_NAME_RE.fullmatch(h)]
    if bad or any(not _HEADER_VALUE_RE.fullmatch(str(v)) for v in headers.values()):
        return _("Header names are letters, digits and hyphens; values are one line of ASCII.")
    if taken := sorted(h for h in headers if h.lower() in _CONNECTION_HEADERS):
        return _("These headers are set by the connection itself: %(names)s.") % {"names": ", ".join(taken)}
    if sum(len(name) + len(str(value)) for name, value in headers.items()) > MAX_HEADERS_CHARS:
        return _("The auth headers may hold at most %(most)d characters in all, names and values.") % {
            "most": MAX_HEADERS_CHARS
        }
    return headers_repeated(headers)


def headers_repeated(names: Iterable[str]) -> str | None:
    """Why auth headers of these names cannot all be sent: some are the same name, whatever its case (HTTP's
    names are, and the server would get both and read either); None if no two are."""
    names = list(names)
    cases = Counter(name.lower() for name in names)
    if repeated := sorted({name for name in names if cases[name.lower()] > 1}):
        return _("Give each header once, whatever the case of its name: %(names)s.") % {
            "names": ", ".join(repeated)[:500]
        }
    return None


@transaction.atomic
def mcp_service_create(
    *,
    actor: Actor,
    name: str,
    url: str,
    type: str = Transport.STREAMABLE_HTTP,
    timeout_seconds: int | None = None,
    headers: dict[str, str] | None = None,
    slug: str | None = None,
) -> McpService:
    """Register an MCP server. Its URL passes the SSRF guard; active services count against the plan."""
    clean = _valid_fields(name=name, url=url, type=type, timeout_seconds=timeout_seconds, headers=headers or {})
    if slug is not None and not _SLUG_RE.fullmatch(slug):
        message = _(
            "Lower-case letters and digits, words joined by single underscores, starting with a letter, at most 30."
        )
        raise InvalidInput(message, details={"slug": [message]})
    _check_service_quota()
    service = McpService(
        name=clean["name"],
        slug=slug or _slug_for(clean["name"]),
        url=clean["url"],
        type=clean["type"],
        config={"timeout_seconds": clean.get("timeout_seconds") or settings.MCP_DEFAULT_TIMEOUT_SECONDS},
        secret_headers=encrypt(json.dumps(clean["headers"])) if clean["headers"] else "",
        created_by=actor.user,
    )
    try:
        with transaction.atomic():
            service.save()
    except IntegrityError as exc:
        message = _("Another service already uses this tool prefix.")
        raise InvalidInput(message, details={"slug": [message]}) from exc
    ai_setup_forget()
    # The URL's origin only: its path or query may hold the provider's key, which the audit, as for auth headers,
    # never holds (the audit is exported and kept for years).
    audit_record(actor=actor, action="mcp_service.created", target=service, metadata={"name": service.name,
                 "url": service.url_origin})  # fmt: skip
    return service


def mcp_service_fields_check(
    *,
    name: str | None = None,
    url: str | None = None,
    type: str | None = None,
    timeout_seconds: int | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Raise :class:`InvalidInput` naming every field that :func:`mcp_service_create` and
    :func:`mcp_service_update` would refuse; a field given as None is not checked. A form that refused
    some fields asks it of the others, so its page names every problem at once instead of one a submit."""
    _valid_fields(name=name, url=url, type=type, timeout_seconds=timeout_seconds, headers=headers)


@transaction.atomic
def mcp_service_update(
    *,
    actor: Actor,
    service: McpService,
    name: str | None = None,
    url: str | None = None,
    type: str | None = None,
    timeout_seconds: int | _Default | None = None,
    headers: dict[str, str] | None = None,
    disabled_tools: list[str] | None = None,
) -> McpService:
    """Change a service. A new URL or transport forgets the cached tools until the next test.

    A URL on another origin (scheme, host, port) than the stored one takes the auth headers anew or removes them
    (``headers={}``): whoever may manage the service never sees them, and must not have them sent to a server of
    their choosing by moving the URL and pressing "test".

    ``disabled_tools`` (names from the loaded tool list) are kept from the model;
    the others, and tools the server adds later, are offered. ``timeout_seconds=DEFAULT``:
    MCP_DEFAULT_TIMEOUT_SECONDS, as a service created without one gets.
    """
    service = _locked(service)
    timeout = settings.MCP_DEFAULT_TIMEOUT_SECONDS if isinstance(timeout_seconds, _Default) else timeout_seconds
    clean = _valid_fields(name=name, url=url, type=type, timeout_seconds=timeout, headers=headers)
    if "url" in clean and headers is None and service.has_secret_headers and not same_origin(service.url, clean["url"]):
        message = _(
            "The URL points to another server now: enter the auth headers again, or remove them. "
            "The stored headers are not sent to another server."
        )
        raise InvalidInput(message, details={"headers": [message]})
    if disabled_tools is not None:
        clean["disabled_tools"] = _valid_disabled_tools(service, disabled_tools)
    changed: list[str] = []  # the model's fields
    audited: list[str] = []  # the API's names for them
    for field in ("name", "url", "type"):
        if field in clean and clean[field] != getattr(service, field):
            setattr(service, field, clean[field])
            changed.append(field)
            audited.append(field)
    current = {"timeout_seconds": service.timeout_seconds, "disabled_tools": service.disabled_tools}
    for key, value in current.items():
        if key in clean and clean[key] != value:
            service.config = {**service.config, key: clean[key]}
            changed.append("config")
            audited.append(key)
    if "headers" in clean:
        service.secret_headers = encrypt(json.dumps(clean["headers"])) if clean["headers"] else ""
        changed.append("secret_headers")
        audited.append("headers")
    if {"url", "type"} & set(changed):  # and the last test's error: it was about the old address
        service.tools, service.tools_refreshed_at, service.last_error, service.last_error_translations = (
            [],
            None,
            "",
            None,
        )
        changed += ["tools", "tools_refreshed_at", "last_error", "last_error_translations"]
    if changed:
        service.save(update_fields=[*dict.fromkeys(changed), "updated_at"])
        ai_setup_forget()
        audit_record(actor=actor, action="mcp_service.updated", target=service, metadata={"fields": sorted(audited)})
    return service


def _valid_disabled_tools(service: McpService, names: list[str]) -> list[str]:
    """The names, each once and sorted; every one must be a tool of the loaded list, so a typo cannot
    leave a tool offered that the admin meant to keep from the model, or one already kept from it: a new
    URL forgets the loaded list but keeps these (the moved server's tool stays kept from the model), and
    the list read back must save as it is."""
    known = {tool["name"] for tool in service.tools} | set(service.disabled_tools)
    unknown = sorted({name for name in names if name not in known})
    if unknown:
        message = _("%(names)s: not a tool of this server's loaded list. Test the connection to load its tools.") % {
            "names": ", ".join(unknown)[:500]
        }
        raise InvalidInput(message, details={"disabled_tools": [message]})
    return sorted(set(names))


@transaction.atomic
def mcp_service_set_active(*, actor: Actor, service: McpService, active: bool) -> McpService:
    """Enable (within the plan's limit) or disable a service; 404 if it was deleted meanwhile."""
    service = _locked(service)
    if service.is_active == active:
        return service
    if active:
        _check_service_quota()
    service.is_active = active
    service.save(update_fields=["is_active", "updated_at"])
    ai_setup_forget()
    audit_record(actor=actor, action="mcp_service.enabled" if active else "mcp_service.disabled", target=service)
    return service


def _locked(service: McpService) -> McpService:
    """The service's row, locked until commit; Http404 (the API's 404 for unknown ids) if another
    request deleted it since it was read."""
    locked = McpService.objects.select_for_update().filter(pk=service.pk).first()
    if locked is None:
        raise Http404
    return locked


@transaction.atomic
def mcp_service_delete(*, actor: Actor, service: McpService) -> None:
    """Remove a service; 404 and no audit event if another request removed it first."""
    service = _locked(service)
    audit_record(actor=actor, action="mcp_service.deleted", target=service, metadata={"name": service.name})
    service.delete()
    ai_setup_forget()


def mcp_service_test(*, actor: Actor, service: McpService) -> client.ToolListing:
    """Connect, list the tools and cache them. Outside any transaction: it waits on the network.

    At most MAX_TOOLS_PER_SERVICE tools are loaded (``client.list_tools``); the listing says whether the
    server lists more, and which tools it left out for an input schema a model server would refuse.

    Raises InvalidInput (code ``mcp_unreachable``) when the URL is not a working
    MCP server; the error is kept on the service for the admin to see. What the
    test found is stored only if the service still has the URL and transport it
    tested: if a change came meanwhile, nothing is stored and it raises 409
    ``service_changed``; if the service was deleted, Http404.
    """
    tested = McpService.objects.filter(pk=service.pk, url=service.url, type=service.type)
    try:
        listing = client.list_tools(service)
    except client.McpError as exc:
        translations = {code: text[:2000] for code, text in in_each_language(exc.words).items()}
        if not tested.update(last_error=storable(str(exc)[:2000]), last_error_translations=storable(translations),
                             updated_at=timezone.now()):  # fmt: skip
            _refuse_changed(service)
        message = _("Could not list the tools of %(url)s: %(error)s") % {"url": service.url, "error": exc}
        raise InvalidInput(message, code="mcp_unreachable", details={"url": [message]}) from exc
    found = storable(
        [{"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in listing.tools]
    )
    now = timezone.now()
    with transaction.atomic():
        if not tested.update(tools=found, tools_refreshed_at=now, last_error="", last_error_translations=None,
                             updated_at=now):  # fmt: skip
            _refuse_changed(service)
        metadata: dict[str, Any] = {"tools": len(listing.tools)} | ({"more": True} if listing.more else {})
        if listing.unusable:
            metadata["unusable"] = [name for name, _problem in listing.unusable][:50]
        audit_record(actor=actor, action="mcp_service.tested", target=service, metadata=metadata)
        ai_setup_forget()
    service.tools, service.tools_refreshed_at, service.updated_at = found, now, now
    service.last_error, service.last_error_translations = "", None
    return listing


def _refuse_changed(service: McpService) -> None:
    """A test's result was not stored: the service is gone (404) or has another URL or transport (409)."""
    if not McpService.objects.filter(pk=service.pk).exists():
        raise Http404
    raise ApplicationError(
        _("The service changed while it was being tested: test it again."), code="service_changed", status_code=409
    )
