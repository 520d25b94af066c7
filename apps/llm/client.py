"""Which model server a tenant's request goes to, and an OpenAI client for it.

The platform's default comes from the environment (LLM_BASE_URL, LLM_API_KEY,
LLM_MODEL, LLM_MODELS) and is trusted: in development it is the loopback demo
model server. A tenant's own provider is a URL the tenant typed, so its client
is the SSRF-guarded one (apps.core.outbound), checked again at every connect.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
from django.conf import settings
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _

from apps.core.crypto import decrypt
from apps.core.exceptions import ApplicationError, InvalidInput
from apps.core.outbound import decoded_response
from apps.core.text import whole_characters

_UNSET: Any = object()


class NoModelConfigured(ApplicationError):
    status_code = 503
    code = "no_model_configured"


class ModelServerUnreachable(ApplicationError):
    """A check of a tenant's own model server failed: not reachable, key refused, not OpenAI-compatible."""

    status_code = 400
    code = "model_server_unreachable"

    def __init__(self, message: str) -> None:
        super().__init__(whole_characters(message))  # it may quote the server's own words


@dataclass(frozen=True)
class ModelServer:
    """Where to send chat completions, and which models may be asked for there."""

    base_url: str
    api_key: str
    models: tuple[str, ...]
    tenant_supplied: bool

    @property
    def default_model(self) -> str:
        return self.models[0]


def model_server(provider: Any = _UNSET) -> ModelServer:
    """The current tenant's active provider, else the platform default.

    Pass ``provider`` when the caller already read the tenant's AI setup.
    """
    if provider is _UNSET:
        from apps.llm.setup_cache import ai_setup

        provider = ai_setup().provider
    if provider is not None and provider.model_ids:
        return provider_server(provider)
    if not settings.LLM_BASE_URL or not settings.LLM_MODELS:
        raise NoModelConfigured(_("No model server is configured for this workspace. Ask an admin to add one."))
    return ModelServer(
        base_url=settings.LLM_BASE_URL,
        api_key=settings.LLM_API_KEY,
        models=tuple(settings.LLM_MODELS),
        tenant_supplied=False,
    )


def provider_server(provider: Any) -> ModelServer:
    """A tenant's own provider (``apps.llm.models.ModelProvider``), whether or not it is in use."""
    return ModelServer(
        base_url=provider.base_url,
        api_key=decrypt(provider.api_key_encrypted),
        models=tuple(provider.model_ids),
        tenant_supplied=True,
    )


@dataclass(frozen=True)
class ServerCheck:
    """What a model server answered to ``GET /models``."""

    offered: tuple[str, ...]  # the models it lists
    missing: tuple[str, ...]  # the models the workspace names that it does not list


def check_model_server(server: ModelServer) -> ServerCheck:
    """Ask the server for its models, with the stored key and no retries: is it reachable, does it take
    the key, does it offer the models the workspace names? Raises ModelServerUnreachable."""
    client = openai_client(server, answer_limit=settings.LLM_MODEL_LIST_MAX_BYTES).with_options(max_retries=0)
    try:
        # The raw response: openai's page type fails with an AttributeError on a body that is not a model list.
        offered = _listed_models(client.models.with_raw_response.list().http_response)
    except AnswerTooLarge as exc:  # openai passes it on as it is, from the answer's body or an error's
        raise ModelServerUnreachable(
            _(
                "The model server's answer to GET /models is larger than %(size)s, the most HydroNet reads from it. "
                "Check that the base URL is the API's, which usually ends in /v1."
            )
            % {"size": filesizeformat(exc.limit)}
        ) from exc
    except openai.AuthenticationError as exc:
        raise ModelServerUnreachable(
            _("The model server refused the API key (%(status)d).") % {"status": exc.status_code}
        ) from exc
    except openai.APIStatusError as exc:
        raise ModelServerUnreachable(models_status_words(exc)) from exc
    except (openai.OpenAIError, httpx2.HTTPError, ValueError) as exc:
        raise ModelServerUnreachable(unreachable_words(exc)) from exc
    finally:
        client.close()
    return ServerCheck(offered=offered, missing=tuple(m for m in server.models if m not in offered))


def status_words(exc: openai.APIStatusError) -> str:
    """A model server's error status in words, with its own message if its body has one (OpenAI's form)."""
    status = exc.status_code
    if 300 <= status < 400:
        return _("The model server answered %(status)d, a redirect, which HydroNet does not follow: check the base "
                 "URL.") % {"status": status}  # fmt: skip
    words = _server_words(exc)
    if words:
        return _("The model server answered %(status)d: %(error)s") % {"status": status, "error": words}
    return _("The model server answered %(status)d.") % {"status": status}


def models_status_words(exc: openai.APIStatusError) -> str:
    """The error status of ``GET /models`` in words (``status_words``); a 404 or 405 there most often means a base
    URL that is not the API's (one without its ``/v1``), and says so, with the server's own message if it sent one."""
    status = exc.status_code
    if status not in (404, 405):
        return status_words(exc)
    words = _server_words(exc)
    if words:
        return _(
            "The model server answered %(status)d to GET /models: “%(error)s”. Check that the base URL is the API's, "
            "which usually ends in /v1."
        ) % {"status": status, "error": words}
    return _(
        "The model server answered %(status)d to GET /models. Check that the base URL is the API's, which usually "
        "ends in /v1."
    ) % {"status": status}


def _server_words(exc: openai.APIStatusError) -> str:
    """The message of an error answer's body in OpenAI's form (``{"error": {"message"}}``), at most 300 characters;
    "" without one."""
    error = exc.body.get("error", exc.body) if isinstance(exc.body, dict) else None
    said = error.get("message") if isinstance(error, dict) else None
    if isinstance(said, str) and said.strip():  # whole before it is cut: a pair cut in two is two halves
        return whole_characters(said).strip()[:300]
    return ""


def unreachable_words(exc: BaseException) -> str:
    """A model server that did not answer, in words: in time, or at all (openai's own "Connection error." said
    neither why nor in the request's language)."""
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        return _("The model server did not answer within %(seconds)d s.") % {"seconds": settings.LLM_TIMEOUT_SECONDS}
    cause = exc.__cause__ if isinstance(exc, openai.APIConnectionError) and exc.__cause__ is not None else exc
    if isinstance(cause, httpx2.ConnectError):
        if _caused_by(cause, socket.gaierror):
            return _("The model server could not be reached: its host name does not resolve.")
        from apps.core.outbound import connect_error_words

        return _("The model server could not be reached: %(error)s") % {"error": connect_error_words(cause)}
    if isinstance(cause, httpx2.TransportError):  # connected, then the connection closed or broke
        return _("The model server closed the connection before it answered.")
    return _("The model server could not be reached: %(error)s") % {"error": exc}


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _depth in range(10):  # a chain is short; a cycle is not followed for ever
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _listed_models(response: httpx2.Response) -> tuple[str, ...]:
    """The ids in an OpenAI ``GET /models`` answer, as whole characters; anything else (a web page, other JSON,
    JSON nested deeper than Python's parser goes) is refused."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    listed = body.get("data") if isinstance(body, dict) else None
    if not isinstance(listed, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in listed):
        raise ModelServerUnreachable(
            _(
                "The model server's answer to GET /models is not an OpenAI-compatible list of models. "
                "Check that the base URL is the API's, which usually ends in /v1."
            )
        )
    return tuple(whole_characters(model["id"]) for model in listed)


def choose_model(server: ModelServer, requested: str | None, *, field: str = "model") -> str:
    """The model to use: the requested one if the server offers it, else the default."""
    if not requested:
        return server.default_model
    if requested not in server.models:
        message = _("Unknown model “%(model)s”. Choose one of: %(models)s.") % {
            "model": requested,
            "models": ", ".join(server.models),
        }
        raise InvalidInput(message, code="unknown_model", details={field: [message]})
    return requested


# What openai tells every server about the machine it runs on (its X-Stainless-* headers: operating system,
# architecture, Python and package versions) is not sent: a workspace's own model server is a stranger's, and the
# versions are what one looks up known flaws by. Omitted headers are dropped by openai's own header merge.
_PLATFORM_HEADERS = ("X-Stainless-Lang", "X-Stainless-Package-Version", "X-Stainless-OS", "X-Stainless-Arch",
                     "X-Stainless-Runtime", "X-Stainless-Runtime-Version", "X-Stainless-Async")  # fmt: skip
_UNTOLD_HEADERS: dict[str, Any] = {**dict.fromkeys(_PLATFORM_HEADERS, openai.Omit()), "User-Agent": "HydroNet"}


def openai_client(server: ModelServer, *, answer_limit: int | None = None) -> openai.OpenAI:
    """An OpenAI client with our timeouts and bounded retries (openai backs off on 429 and 5xx).

    It says who it is as ``User-Agent: HydroNet`` and nothing about the platform it runs on (``_UNTOLD_HEADERS``).

    ``answer_limit``: the most bytes of any answer it reads, decoded (:class:`BoundedAnswers`); for a client
    whose answers are read whole, not one that reads a chat's stream.
    """
    timeout = httpx2.Timeout(settings.LLM_TIMEOUT_SECONDS, connect=settings.LLM_CONNECT_TIMEOUT_SECONDS)

    def bounded(transport: httpx2.BaseTransport) -> httpx2.BaseTransport:
        return BoundedAnswers(transport, limit=answer_limit) if answer_limit is not None else transport

    if server.tenant_supplied:
        from apps.core.outbound import guarded_client

        http_client = guarded_client(timeout=timeout, wrap_transport=bounded)
    else:
        http_client = httpx2.Client(
            transport=bounded(httpx2.HTTPTransport(trust_env=False)), timeout=timeout, trust_env=False
        )
    http_client.event_hooks = {"request": [], "response": [no_long_waits]}
    return openai.OpenAI(
        base_url=server.base_url,
        api_key=server.api_key or "unused",
        max_retries=settings.LLM_MAX_RETRIES,
        timeout=timeout,
        http_client=http_client,
        default_headers=_UNTOLD_HEADERS,
    )


def no_long_waits(response: httpx2.Response) -> None:
    """An error answer asking for a wait (``Retry-After``, or OpenAI's ``retry-after-ms``) longer than
    ``LLM_MAX_RETRY_AFTER_SECONDS`` is not retried: it gets ``x-should-retry: false``, which openai obeys. openai
    waited up to two minutes before each attempt, and the turn, its web thread and its conversation waited with
    it (QA, 2026-12-07: 200 s without a byte). The failure then stands, in the server's words."""
    if response.status_code < 400:
        return
    wait = _retry_after_seconds(response.headers)
    if wait is not None and wait > settings.LLM_MAX_RETRY_AFTER_SECONDS:
        response.headers["x-should-retry"] = "false"


def _retry_after_seconds(headers: httpx2.Headers) -> float | None:
    """The wait an answer asks for, as openai reads it: ``retry-after-ms``, else ``retry-after`` in seconds or as
    an HTTP date. None without one, or one that is not a wait."""
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        said = headers.get("retry-after")
        if said is None:
            return None
        try:
            return float(said)
        except ValueError:
            return (email.utils.parsedate_to_datetime(said) - dt.datetime.now(dt.UTC)).total_seconds()
    except (ValueError, TypeError, OverflowError):  # TypeError: a date without a zone (naive)
        return None


class AnswerTooLarge(Exception):
    """An answer went past its client's ``answer_limit`` while it was read. Not an httpx2 error: openai would
    take it for a connection that broke."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"An answer exceeded the {limit} byte limit.")
        self.limit = limit


class _BoundedBody(httpx2.SyncByteStream):
    """``response``'s body, decoded, raising :class:`AnswerTooLarge` once more than ``limit`` bytes came."""

    def __init__(self, response: httpx2.Response, limit: int) -> None:
        self._response = response
        self._limit = limit

    def __iter__(self) -> Iterator[bytes]:
        read = 0
        for chunk in self._response.iter_bytes():
            read += len(chunk)
            if read > self._limit:
                raise AnswerTooLarge(self._limit)
            yield chunk

    def close(self) -> None:
        self._response.close()


class BoundedAnswers(httpx2.BaseTransport):
    """``transport``, whose answers are read through ``limit`` bytes at most (the sync twin of
    ``apps.mcp.client.BoundedJsonAnswers``, for every answer: an error page too).

    The body is handed on decoded, its ``Content-Encoding`` gone, so the bound counts what would be held, not
    the compressed size; the read stops at the chunk that passes it.
    """

    def __init__(self, transport: httpx2.BaseTransport, *, limit: int) -> None:
        self._transport = transport
        self._limit = limit

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self._transport.handle_request(request)
        return decoded_response(response, request, _BoundedBody(response, self._limit))

    def close(self) -> None:
        self._transport.close()
