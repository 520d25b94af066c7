"""Stop while the turn waits (a tool call, a model that has not answered yet), through the production web server.

granian closes a response only at a write after the client left; a turn blocked in a tool call or a silent model's
read wrote nothing, so it ran on for the tool's or the model's time, holding its conversation (409
``conversation_busy``), its thread and the upstream work. Now it writes ``: waiting`` every second meanwhile.
"""

from __future__ import annotations

import json
import select
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx2
import pytest
from django.utils import translation
from django.utils.translation import gettext as _
from django_tenants.utils import schema_context

from apps.chat.models import Message
from apps.mcp.services import mcp_service_create, mcp_service_delete, mcp_service_test
from apps.tenants.db import connection
from tests.chat.conftest import text_chunk, tool_call_chunk
from tests.chat.test_openai_api import live_key, openai_client
from tests.chat.test_streaming_live import counted_calls, events, live_conversation, stream
from tests.chat.test_turn_while_things_change import hold_left, month_calls
from tests.conftest import TEST_ACTOR, TenantFixture
from tests.mcp.test_sdk_servers import heard, serving
from tests.processes import held_model_server, http_server, serve

__all__ = ["live_conversation", "live_key"]


@pytest.fixture
def slow_service(django_db_blocker: Any, tenant_alpha: TenantFixture) -> Iterator[Any]:
    """``slow`` (an SDK server whose tool ``slow(seconds)`` notes whether it was cancelled), registered in alpha."""
    heard.clear()
    with serving() as url, django_db_blocker.unblock(), schema_context(tenant_alpha.tenant.schema_name):
        service = mcp_service_create(actor=TEST_ACTOR, name="Slow", url=url, slug="slow", timeout_seconds=60)
        mcp_service_test(actor=TEST_ACTOR, service=service)
        connection.set_schema_to_public()
        yield service
        with schema_context(tenant_alpha.tenant.schema_name):
            mcp_service_delete(actor=TEST_ACTOR, service=service)
        connection.set_schema_to_public()


def waited_for(seen: Any, seconds: float = 2.0) -> float:
    """How long ``seen()`` took to come true (at most ``seconds``, else the test fails)."""
    started = time.monotonic()
    while not seen():
        assert time.monotonic() - started < seconds, "not within the time"
        time.sleep(0.02)
    return time.monotonic() - started


def stored(tenant: TenantFixture, conversation_id: int, django_db_blocker: Any) -> list[tuple[str, str, str]]:
    with django_db_blocker.unblock(), schema_context(tenant.tenant.schema_name):
        rows = list(Message.objects.filter(conversation_id=conversation_id).order_by("id")
                    .values_list("role", "status", "content"))  # fmt: skip
        connection.set_schema_to_public()
    return rows


def test_stop_during_a_tool_call_cancels_it_on_the_mcp_server_and_frees_the_conversation(
    tmp_path: Path, live_conversation: tuple[int, str], slow_service: Any, tenant_alpha: TenantFixture,
    django_db_blocker: Any,
) -> None:  # fmt: skip
    conversation_id, token = live_conversation
    answers = [[tool_call_chunk("slow__slow", '{"seconds": 30}')], [text_chunk("Done.", "stop")]]
    calls = counted_calls(tenant_alpha, django_db_blocker)
    with held_model_server(answers, hold=-1) as model, serve(tmp_path, model.url, workers=1, threads=4) as server:
        with stream(server, conversation_id, token, "run the slow one") as response:
            for kind, _data in events(response):
                if kind == "tool_call":
                    waited_for(lambda: heard == ["started"], 5)
                    break  # the member presses Stop while the tool runs
        left = time.monotonic()
        waited_for(lambda: heard == ["started", "cancelled"])
        waited_for(lambda: not hold_left(tenant_alpha, conversation_id))
        assert time.monotonic() - left < 2.5
        rows = stored(tenant_alpha, conversation_id, django_db_blocker)
        assert [(role, status) for role, status, _content in rows] == [
            ("user", "complete"),
            ("assistant", "complete"),
            ("tool", "error"),
        ]
        with translation.override("zh-hans"):  # the request's language: it asked in none, and zh-hans is the default
            assert rows[2][2] == _("The tool call was stopped: the reply was stopped before it finished.")
        assert month_calls(tenant_alpha) == calls + 2  # the model round and the tool call, each once
        with stream(server, conversation_id, token, "and now?") as response:
            assert response.status_code == 200
            seen = list(events(response))
        assert seen[-1][0] == "done", seen


class Silent:
    """A model server that answers its first request's headers, then nothing, noting when the connection closed;
    later requests are answered at once."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.requests = 0


@pytest.fixture
def silent_model() -> Iterator[tuple[str, Silent]]:
    silent = Silent()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            silent.requests += 1
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.flush()
            if silent.requests == 1:
                while not select.select([self.connection], [], [], 30)[0]:
                    pass
                silent.closed.set()  # readable with nothing to read: the client closed it
                return
            time.sleep(1.5)  # silent for a while: a comment is written meanwhile
            for chunk in (text_chunk("Hello.", "stop"),):
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")

        def log_message(self, *args: object) -> None:
            pass

    with http_server(Handler) as root:
        yield f"{root}/v1", silent


def test_stop_before_the_first_token_closes_the_model_request_and_frees_the_conversation(
    tmp_path: Path, live_conversation: tuple[int, str], silent_model: tuple[str, Silent], tenant_alpha: TenantFixture,
    django_db_blocker: Any,
) -> None:  # fmt: skip
    conversation_id, token = live_conversation
    url, silent = silent_model
    calls = counted_calls(tenant_alpha, django_db_blocker)
    with serve(tmp_path, url, workers=1, threads=4) as server:
        with stream(server, conversation_id, token, "think hard") as response:
            assert response.status_code == 200
            first = next(response.iter_raw())
            assert first == b": waiting\n\n"  # a comment, nothing else, while the model says nothing
        left = time.monotonic()
        assert silent.closed.wait(2.5)
        waited_for(lambda: not hold_left(tenant_alpha, conversation_id))
        assert time.monotonic() - left < 2.5
        assert [(role, status) for role, status, _c in stored(tenant_alpha, conversation_id, django_db_blocker)] == [
            ("user", "complete")
        ]
        assert month_calls(tenant_alpha) == calls + 1  # the round, once
        with stream(server, conversation_id, token, "again") as response:
            assert response.status_code == 200
            assert list(events(response))[-1][0] == "done"


def test_a_v1_stream_stopped_before_the_first_token_closes_the_model_request(
    tmp_path: Path, silent_model: tuple[str, Silent], live_key: str
) -> None:
    """A /v1 client gone while the model is silent closes the model's request; openai's own client reads through
    the comments written while the model is silent."""
    url, silent = silent_model
    with serve(tmp_path, url, workers=1, threads=4) as server:
        with httpx2.Client(timeout=30).stream(
            "POST", f"http://127.0.0.1:{server.port}/v1/chat/completions",
            json={"model": "hydronet-demo", "messages": [{"role": "user", "content": "hi"}], "stream": True},
            headers={"Host": f"alpha.localhost:{server.port}", "Authorization": f"Bearer {live_key}"},
        ) as response:  # fmt: skip
            assert response.status_code == 200
            for raw in response.iter_raw():
                if b": waiting" in raw:
                    break
        assert silent.closed.wait(2.5)
        pieces = openai_client(server, live_key).chat.completions.create(
            model="hydronet-demo", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert "".join(chunk.choices[0].delta.content or "" for chunk in pieces if chunk.choices) == "Hello."
