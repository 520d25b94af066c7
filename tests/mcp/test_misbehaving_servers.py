"""MCP servers on loopback that answer a tool call with an error, with text JSON parsers refuse, or (SSE) name no
message endpoint or one elsewhere: each said for what it is, in the time the service allows."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from django.utils import translation
from django_tenants.utils import schema_context

from apps.chat.engine import BoundTool, run_mcp_tool
from apps.mcp import client as mcp_client
from apps.mcp.models import McpService
from apps.mcp.services import mcp_service_create
from tests.conftest import TEST_ACTOR, TenantFixture
from tests.processes import canned_server, http_server

pytestmark = pytest.mark.django_db

STARTED = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
           "serverInfo": {"name": "odd", "version": "1"}}  # fmt: skip
Answer = Callable[[dict[str, Any]], dict[str, Any] | None]
LISTED = {"tools": [{"name": "gauge", "inputSchema": {"type": "object"}}]}


def answering(call: dict[str, Any]) -> Answer:
    """A server's answers: the session started, the tool ``gauge`` listed (the SDK lists the tools before it
    calls one), and ``call`` (the answer's body but its ``jsonrpc`` and ``id``) to a call."""

    def answer(message: dict[str, Any]) -> dict[str, Any] | None:
        if "id" not in message:
            return None
        bodies: dict[str, dict[str, Any]] = {"initialize": {"result": STARTED}, "tools/list": {"result": LISTED}}
        body = bodies.get(message["method"], call)
        return {"jsonrpc": "2.0", "id": message["id"], **body}

    return answer


def text_result(text_json: str) -> dict[str, Any]:
    """A tool's result whose one text is ``text_json`` as written in the JSON (escapes and all)."""
    return json.loads('{"result": {"content": [{"type": "text", "text": "' + text_json + '"}]}}')


def raw(message: dict[str, Any]) -> bytes:
    """``message`` as a server may write it: ``json.dumps`` writes a lone surrogate as its escape."""
    return json.dumps(message).encode()


@contextmanager
def streamable_server(answer: Answer, content_type: str) -> Iterator[str]:
    """A streamable-HTTP MCP server at ``<url>/mcp``, answering each request in ``content_type``."""

    def body(request: bytes) -> bytes:
        answered = answer(json.loads(request or b"{}"))
        if answered is None:
            return b""
        if content_type == "application/json":
            return raw(answered)
        return b"event: message\ndata: " + raw(answered) + b"\n\n"

    def status(request: bytes) -> int:
        return 202 if "id" not in json.loads(request or b"{}") else 200

    with canned_server(body, status=status, content_type=content_type) as root:
        yield f"{root}/mcp"


@contextmanager
def sse_server(answer: Answer, *, endpoint: str | None = "/messages?sid=1", first: bytes = b"") -> Iterator[str]:
    """An SSE MCP server at ``<url>/sse``: its event stream sends ``first``, then names ``endpoint`` (None: never),
    then each of ``answer``'s answers to what is posted there; the stream stays open until the server stops."""
    answers: queue.Queue[bytes | None] = queue.Queue()
    stopping = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(first + (f"event: endpoint\r\ndata: {endpoint}\r\n\r\n".encode() if endpoint else b""))
            self.wfile.flush()
            while not stopping.is_set():
                try:
                    event = answers.get(timeout=0.1)
                except queue.Empty:
                    continue
                if event is None:
                    return
                self.wfile.write(b"event: message\r\ndata: " + event + b"\r\n\r\n")
                self.wfile.flush()

        def do_POST(self) -> None:
            answered = answer(json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0))))
            if answered is not None:
                answers.put(raw(answered))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with http_server(Handler) as root:
        try:
            yield f"{root}/sse"
        finally:
            stopping.set()  # the open event streams end, so that the server can stop


def serving(transport: str, answer: Answer) -> AbstractContextManager[str]:
    """``sse_server`` for ``"sse"``, else ``streamable_server`` answering in ``transport`` (a content type)."""
    return sse_server(answer) if transport == "sse" else streamable_server(answer, transport)


def service(tenant: TenantFixture, url: str, transport: str = "streamable-http", timeout: int = 5) -> McpService:
    with schema_context(tenant.tenant.schema_name):
        return mcp_service_create(actor=TEST_ACTOR, name="Odd", url=url, type=transport, timeout_seconds=timeout)


def failure(tenant: TenantFixture, made: McpService) -> tuple[str, float]:
    """What listing ``made``'s tools failed with, and after how many seconds."""
    started = time.monotonic()
    with schema_context(tenant.tenant.schema_name), pytest.raises(mcp_client.McpError) as failed:
        mcp_client.list_tools(made)
    return str(failed.value), time.monotonic() - started


class TestAnswers:
    @pytest.mark.parametrize("transport", ["application/json", "text/event-stream", "sse"])
    def test_a_json_rpc_error_is_the_servers_own(self, tenant_alpha: TenantFixture, transport: str) -> None:
        """It read "The server did not answer as an MCP server: internal tool failure": it did, with an error."""
        error = {"error": {"code": -32000, "message": "internal tool failure"}}
        with serving(transport, answering(error)) as url, schema_context(tenant_alpha.tenant.schema_name):
            made = service(tenant_alpha, url, "sse" if transport == "sse" else "streamable-http")
            outcome = run_mcp_tool(BoundTool("odd__gauge", made, "gauge", "", {}), {})
        assert outcome.is_error
        assert outcome.text == "The tool call failed: The MCP server answered with an error: internal tool failure"

    @pytest.mark.parametrize("transport", ["application/json", "text/event-stream", "sse"])
    def test_lone_surrogates_in_a_result_are_replacement_characters(
        self, tenant_alpha: TenantFixture, transport: str
    ) -> None:
        """pydantic refuses ``"\\ud83d"`` (valid JSON): the whole call failed as "not valid JSON-RPC", while the
        model's own text is made whole. A pair stays its character, an escaped backslash before ``u`` text."""
        result = text_result(r"a\ud83d b \ud83d\ude00 \ude00\ud83d\u0041 \\ud83d")
        with serving(transport, answering(result)) as url, schema_context(tenant_alpha.tenant.schema_name):
            made = service(tenant_alpha, url, "sse" if transport == "sse" else "streamable-http")
            outcome = run_mcp_tool(BoundTool("odd__gauge", made, "gauge", "", {}), {})
        assert (outcome.is_error, outcome.text) == (False, "a\ufffd b \U0001f600 \ufffd\ufffdA \\ud83d")

    @pytest.mark.parametrize(
        "chunks",
        [[b'{"a": "\\ud8', b'3d\\ude00 \\ud83d"}\n'], [b'{"a": "x\\\\', b"ud83d \\ud83d", b'"}']],
        ids=["pair split", "escaped backslash split"],
    )
    def test_an_escape_split_between_chunks_is_read_whole(self, chunks: list[bytes]) -> None:
        async def read() -> Any:
            def answer(request: Any) -> Any:
                return mcp_client.httpx2.Response(200, headers={"content-type": "application/json"}, stream=Body())

            class Body(mcp_client.httpx2.AsyncByteStream):
                async def __aiter__(self) -> Any:
                    for chunk in chunks:
                        yield chunk

            transport = mcp_client.WholeCharacterAnswers(mcp_client.httpx2.MockTransport(answer))
            async with mcp_client.httpx2.AsyncClient(transport=transport) as client:
                return (await client.post("http://mcp.test/mcp", json={})).json()["a"]

        said = asyncio.run(read())
        assert said == ("\U0001f600 \ufffd" if len(chunks) == 2 else "x\\ud83d \ufffd")


class TestSseEndpoint:
    def test_a_stream_that_names_no_endpoint_fails_in_the_services_timeout(self, tenant_alpha: TenantFixture) -> None:
        """It failed as "No answer within 2 s." after 7 s, the session's own limit (the SDK waits for the endpoint
        for as long as the stream is open)."""
        with sse_server(answering({}), endpoint=None, first=b": ping\r\n\r\n") as url:
            said, seconds = failure(tenant_alpha, service(tenant_alpha, url, "sse", timeout=2))
        assert said == ("The server opened an event stream but named no message endpoint within 2 s: check the "
                        "URL's path (often /sse for SSE) and the transport.")  # fmt: skip
        assert 2 <= seconds < 4, seconds

    @pytest.mark.parametrize(
        ("endpoint", "named"),
        [("http://169.254.169.254/messages?session_id=s1", "http://169.254.169.254/messages"),
         ("https://user:pw@127.0.0.1/messages", "https://127.0.0.1/messages"), ("//example.com/m", "http://example.com/m")],
    )  # fmt: skip
    def test_an_endpoint_on_another_host_is_named_at_once(
        self, tenant_alpha: TenantFixture, endpoint: str, named: str
    ) -> None:
        """The SDK refuses it, and then waited, as for no endpoint, until the session's limit: "No answer within
        5 s." after 10 s."""
        with sse_server(answering({}), endpoint=endpoint) as url:
            said, seconds = failure(tenant_alpha, service(tenant_alpha, url, "sse", timeout=5))
        assert said == f"The server named a message endpoint on another host ({named}); it is not used."
        assert seconds < 2, seconds

    @pytest.mark.parametrize(
        ("chunks", "named"),
        [([b"event: endpoint\r", b"\ndata: http://169.254.169", b".254/m?sid=1\r", b"\n\r\n"],
          "http://169.254.169.254/m"),
         ([b": hi\n\nevent: endpoint\ndata: /m\n\n", b"event: endpoint\ndata: http://elsewhere.test/m\n\n"], None)],
        ids=["split lines", "only the first counts"],
    )  # fmt: skip
    def test_the_endpoint_is_read_across_chunks(self, chunks: list[bytes], named: str | None) -> None:
        """A "\\r" at a chunk's end and the "\\n" that begins the next are one line break, not two (a blank
        line would end the event before its data)."""

        async def read() -> bytes:
            def answer(request: Any) -> Any:
                return mcp_client.httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=Body())

            class Body(mcp_client.httpx2.AsyncByteStream):
                async def __aiter__(self) -> Any:
                    for chunk in chunks:
                        yield chunk

            url = "http://127.0.0.1:8000/sse"
            transport = mcp_client.EndpointWatch(mcp_client.httpx2.MockTransport(answer), url=url, seconds=5)
            async with mcp_client.httpx2.AsyncClient(transport=transport) as client:
                return (await client.get(url)).content

        if named is None:
            assert asyncio.run(read()) == b"".join(chunks)
        else:
            with pytest.raises(mcp_client.ForeignMessageEndpoint) as refused:
                asyncio.run(read())
            assert refused.value.endpoint == named

    def test_a_request_never_answered_names_the_limit_it_was_waited_for(self, tenant_alpha: TenantFixture) -> None:
        """The session's limit is the service's timeout and 5 s: it said "No answer within 1 s." after 6 s."""
        with sse_server(lambda message: None) as url:
            said, seconds = failure(tenant_alpha, service(tenant_alpha, url, "sse", timeout=1))
        assert said == "No answer within 6 s."
        assert 6 <= seconds < 8, seconds


class TestTheLog:
    def test_a_failure_is_logged_in_english_whatever_the_requests_language(
        self, tenant_alpha: TenantFixture, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The error said to a member is in their language; the operators' log line was too, so a Chinese member's
        failures were logged in Chinese."""
        with canned_server(b"<html>not MCP</html>") as root:
            made = service(tenant_alpha, f"{root}/mcp")
            with translation.override("zh-hans"), caplog.at_level(logging.WARNING, logger="apps.mcp.client"):
                said, _seconds = failure(tenant_alpha, made)
        logged = [record.getMessage() for record in caplog.records if record.name == "apps.mcp.client"]
        assert len(logged) == 1, logged
        assert "text/html" in logged[0]
        assert logged[0].isascii(), logged[0]  # the member was told in Chinese
        assert not said.isascii(), said


class TestRedirects:
    @pytest.mark.parametrize("transport", ["streamable-http", "sse"])
    @pytest.mark.parametrize("location", ["absolute", "relative"])
    def test_an_address_that_redirects_to_itself_is_said_to(
        self, tenant_alpha: TenantFixture, transport: str, location: str
    ) -> None:
        """The SDK follows a redirect within the origin until its budget runs out: it said "redirects to <the
        address>, which HydroNet does not follow: if that is the MCP server, use its URL" (it was), and for SSE
        "The server answered 307, an error"."""
        path = "/sse" if transport == "sse" else "/mcp"
        headers: dict[str, str] = {}
        with canned_server(b"", status=307, headers=headers) as root:
            headers["Location"] = f"{root}{path}?again=1" if location == "absolute" else path
            said, _seconds = failure(tenant_alpha, service(tenant_alpha, f"{root}{path}", transport))
        assert said == (f"The address redirects to itself ({root}{path}), so it never answers: check the URL, and the "
                        "server's configuration (or that of a proxy in front of it).")  # fmt: skip

    @pytest.mark.parametrize("transport", ["streamable-http", "sse"])
    def test_a_redirect_elsewhere_names_where(self, tenant_alpha: TenantFixture, transport: str) -> None:
        with canned_server(b"", status=307, headers={"Location": "http://mcp.example.com/mcp?token=x"}) as root:
            said, _seconds = failure(tenant_alpha, service(tenant_alpha, f"{root}/mcp", transport))
        assert said == ("The address redirects to http://mcp.example.com/mcp, which HydroNet does not follow: if "
                        "that is the MCP server, use its URL.")  # fmt: skip


WEB_PAGE = "The address is a web page (it answered with text/html), not an MCP endpoint: check the URL's path (often " \
           "/mcp, or /sse for SSE)."  # fmt: skip
AUTH_HEADERS = "The server refused the request ({status}): check the auth headers."


class TestAddressesThatAreNotMcpServers:
    """What "Test connection" says of an address that answers, but is not an MCP endpoint: what to check."""

    @pytest.mark.parametrize("transport", ["streamable-http", "sse"])
    @pytest.mark.parametrize(
        ("status", "headers", "says"),
        [(200, {}, WEB_PAGE), (403, {}, WEB_PAGE), (404, {}, WEB_PAGE), (405, {}, WEB_PAGE), (400, {}, WEB_PAGE),
         (401, {"WWW-Authenticate": 'Basic realm="mcp"'}, AUTH_HEADERS.format(status=401)),
         (502, {}, "The server failed: it answered 502. Try again later, or ask whoever runs it.")],
    )  # fmt: skip
    def test_a_web_page_is_said_to_be_one_whatever_its_status(
        self, tenant_alpha: TenantFixture, transport: str, status: int, headers: dict[str, str], says: str
    ) -> None:
        """A Django site refuses a POST without its CSRF token with a 403 page: that read "The server refused the
        request (403): check the auth headers", the wrong way to look. A 401 that asks for credentials still asks
        for them, and a proxy's 502 page is the server's failure, not a web page's address."""
        page = b"<!DOCTYPE html><html><body><h1>Forbidden (403)</h1>CSRF verification failed.</body></html>"
        with canned_server(page, status=status, content_type="text/html; charset=utf-8", headers=headers) as root:
            said, _seconds = failure(tenant_alpha, service(tenant_alpha, f"{root}/mcp", transport))
        assert said == says

    @pytest.mark.parametrize("transport", ["streamable-http", "sse"])
    @pytest.mark.parametrize("status", [401, 403])
    def test_a_refusal_that_is_not_a_web_page_is_about_the_auth_headers(
        self, tenant_alpha: TenantFixture, transport: str, status: int
    ) -> None:
        with canned_server(b'{"error": "invalid_token"}', status=status, content_type="application/json") as root:
            said, _seconds = failure(tenant_alpha, service(tenant_alpha, f"{root}/mcp", transport))
        assert said == AUTH_HEADERS.format(status=status)

    @pytest.mark.parametrize("body", [b'{"status": "ok"}', b""])
    def test_json_that_is_not_json_rpc_says_what_to_check(self, tenant_alpha: TenantFixture, body: bytes) -> None:
        """A health check's URL (``/healthz``) answering JSON read "The server's answer is not valid JSON-RPC.":
        jargon, and nothing to do about it."""
        with canned_server(body, content_type="application/json") as root:
            made = service(tenant_alpha, f"{root}/healthz")
            said, _seconds = failure(tenant_alpha, made)
            with translation.override("zh-hans"):
                zh, _seconds = failure(tenant_alpha, made)
        assert said == ("The address answered, but not as an MCP server does: check the URL's path (often /mcp, or "
                        "/sse for SSE) and the transport.")  # fmt: skip
        assert "/mcp" in zh
        assert not zh.isascii()  # said in Chinese


class TestTheHandshake:
    @pytest.mark.parametrize("transport", ["application/json", "text/event-stream"])
    def test_a_protocol_version_the_sdk_does_not_speak_is_named(
        self, tenant_alpha: TenantFixture, transport: str
    ) -> None:
        """A server that answered ``initialize`` with a version of its own read "RuntimeError: Unsupported protocol
        version from the server: 2099-01-01", in English in either language, and nothing to do about it."""
        started = {**STARTED, "protocolVersion": "2099-01-01"}

        def answer(message: dict[str, Any]) -> dict[str, Any] | None:
            return {"jsonrpc": "2.0", "id": message["id"], "result": started} if "id" in message else None

        with streamable_server(answer, transport) as url:
            said, _seconds = failure(tenant_alpha, service(tenant_alpha, url))
        assert said == (
            "The server speaks version 2099-01-01 of MCP, which HydroNet does not (it speaks 2024-11-05, 2025-03-26, "
            "2025-06-18, 2025-11-25): ask whoever runs the server to offer one of those."
        )

    @pytest.mark.parametrize("transport", ["streamable-http", "sse"])
    @pytest.mark.parametrize(
        ("challenge", "says"),
        [('Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource"',
          "The server asks for an OAuth sign-in (401), which HydroNet does not do: get an access token"),
         ('Bearer realm="mcp", error="invalid_token"', AUTH_HEADERS.format(status=401))],
    )  # fmt: skip
    def test_an_oauth_challenge_says_to_give_a_token(
        self, tenant_alpha: TenantFixture, transport: str, challenge: str, says: str
    ) -> None:
        """MCP's authorization: a 401 naming the server's ``resource_metadata`` asks the client to sign in with OAuth,
        which HydroNet does not; the admin is told to add a token. Another Bearer refusal is about the headers."""
        headers = {"WWW-Authenticate": challenge}
        with canned_server(b'{"error": "invalid_token"}', status=401, content_type="application/json",
                           headers=headers) as root:  # fmt: skip
            said, _seconds = failure(tenant_alpha, service(tenant_alpha, f"{root}/mcp", transport))
        assert said.startswith(says), said
