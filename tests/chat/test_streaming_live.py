"""Streaming through the whole stack (the web server, Django, openai, the demo model server) over real HTTP."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import psutil
import pytest
from django.conf import settings
from django_tenants.utils import schema_context

from apps.accounts.models import User
from apps.chat.models import Conversation, Message
from apps.tenants.db import connection
from apps.usage.models import UsageEvent
from tests.chat.conftest import text_chunk, tool_call_chunk
from tests.conftest import TenantFixture, admin_of, jwt_pair, make_member
from tests.processes import WebServer, _free_port, held_model_server, serve


@pytest.fixture
def live_conversation(django_db_blocker: Any, tenant_alpha: TenantFixture) -> Iterator[tuple[int, str]]:
    """A committed member of alpha with a conversation, and their access token."""
    with django_db_blocker.unblock():
        member = make_member(tenant_alpha, "user")
        with schema_context(tenant_alpha.tenant.schema_name):
            conversation = Conversation.objects.create(user=member)
        token = jwt_pair(tenant_alpha, member)["access"]
    yield conversation.pk, token
    with django_db_blocker.unblock(), schema_context(tenant_alpha.tenant.schema_name):
        Conversation.objects.filter(pk=conversation.pk).delete()
        User.objects.filter(pk=member.pk).delete()
        connection.set_schema_to_public()


def stream(web_server: WebServer, conversation_id: int, token: str, content: str) -> Any:
    client = httpx2.Client(timeout=30)
    return client.stream(
        "POST",
        f"http://127.0.0.1:{web_server.port}/api/conversations/{conversation_id}/messages",
        json={"content": content, "stream": True},
        headers={"Host": f"alpha.localhost:{web_server.port}", "Authorization": f"Bearer {token}"},
    )


def events(response: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    buffer = ""
    for text in response.iter_text():
        buffer += text
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            if block.startswith(":"):  # a comment: the turn is waiting (apps.chat.waits)
                continue
            fields = dict(line.split(": ", 1) for line in block.splitlines())
            yield fields["event"], json.loads(fields["data"])


def deleted_while_streaming(
    web_server: WebServer, conversation_id: int, token: str, path: str, deleter: str
) -> list[tuple[str, dict[str, Any]]]:
    """A long reply's events, ``path`` deleted (by the holder of the ``deleter`` token) once it is under way."""
    seen: list[tuple[str, dict[str, Any]]] = []
    with stream(web_server, conversation_id, token, "tell me everything #long") as response:
        for kind, data in events(response):
            seen.append((kind, data))
            if len(seen) == 3:  # the reply is under way
                deleted = httpx2.delete(
                    f"http://127.0.0.1:{web_server.port}{path}",
                    headers={"Host": f"alpha.localhost:{web_server.port}", "Authorization": f"Bearer {deleter}"},
                )
                assert deleted.status_code == 204, deleted.text
    return seen


def counted_calls(tenant: TenantFixture, django_db_blocker: Any) -> int:
    """The month's calls as Redis counts them, its counters first rebuilt from the ledger where missing (each test
    begins without them; the rebuild would count the ledger's rows, committed ones of earlier tests included, at
    the first charge)."""
    from django.utils import timezone

    from apps.core.actors import Actor
    from apps.usage.meter import Meter
    from tests.chat.test_turn_while_things_change import month_calls

    with django_db_blocker.unblock(), schema_context(tenant.tenant.schema_name):
        Meter.for_actor(Actor(label="tests")).rebuild(timezone.now().date())
        connection.set_schema_to_public()
    return month_calls(tenant)


def demo_stats(demo_model_url: str) -> dict[str, int]:
    stats: dict[str, int] = httpx2.get(demo_model_url.removesuffix("/v1") + "/_demo/stats", timeout=5).json()
    return stats


def test_the_first_token_arrives_before_the_last_is_sent(
    web_server: WebServer, live_conversation: tuple[int, str]
) -> None:
    conversation_id, token = live_conversation
    with stream(web_server, conversation_id, token, "warm up") as response:
        list(events(response))  # the server's first request loads code; keep that out of the timing
    started = time.monotonic()
    first = last = None
    count = 0
    with stream(web_server, conversation_id, token, "hi #long") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for kind, _data in events(response):
            if kind == "token":
                count += 1
                first = first or time.monotonic() - started
            if kind == "done":
                last = time.monotonic() - started
    assert count >= 200
    assert first is not None
    assert last is not None
    # 200 chunks, 5 ms apart upstream (at least 1 s): a buffered stream would deliver its
    # first token together with its last one.
    assert last - first > 0.8, (first, last)


def test_a_client_that_goes_away_cancels_the_upstream_request(
    web_server: WebServer, live_conversation: tuple[int, str], demo_model_url: str, tenant_alpha: TenantFixture,
    django_db_blocker: Any,
) -> None:  # fmt: skip
    conversation_id, token = live_conversation
    before = demo_stats(demo_model_url)["streams_cancelled"]
    with stream(web_server, conversation_id, token, "hi #long") as response:
        for kind, _data in events(response):
            if kind == "token":
                break  # hang up after the first token
    deadline = time.monotonic() + 10
    while demo_stats(demo_model_url)["streams_cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert demo_stats(demo_model_url)["streams_cancelled"] == before + 1
    with django_db_blocker.unblock(), schema_context(tenant_alpha.tenant.schema_name):
        deadline = time.monotonic() + 5
        while not Message.objects.filter(conversation_id=conversation_id, role="assistant").exists():
            assert time.monotonic() < deadline, "the partial reply was not stored"
            time.sleep(0.1)
        partial = Message.objects.get(conversation_id=conversation_id, role="assistant")
        assert partial.status == "incomplete"
        assert partial.content
        assert Message.objects.get(conversation_id=conversation_id, role="user").content == "hi #long"
        connection.set_schema_to_public()
    # The turn is over: the conversation takes the next question at once (one turn at a time in it).
    with stream(web_server, conversation_id, token, "hello again") as response:
        assert response.status_code == 200
        assert [kind for kind, _data in events(response)][-1] == "done"


def test_a_conversation_deleted_while_its_reply_streams_ends_the_turn_cleanly(
    web_server: WebServer, live_conversation: tuple[int, str], tenant_alpha: TenantFixture, django_db_blocker: Any
) -> None:
    """Another tab deletes the conversation mid-reply: when the reply is to be stored, the stream ends with an
    error event, where the reply's INSERT used to fail on its foreign key and break off the stream."""
    conversation_id, token = live_conversation
    log_size = web_server.log.stat().st_size
    seen = deleted_while_streaming(web_server, conversation_id, token, f"/api/conversations/{conversation_id}", token)
    kind, data = seen[-1]
    assert kind == "error", seen[-3:]
    assert data["code"] == "not_found"
    assert data["status"] == 404
    assert data["message"] == "回复生成期间，此对话已被删除。"  # no Accept-Language: the default, zh-hans
    assert "Traceback" not in web_server.log.read_text()[log_size:]
    with django_db_blocker.unblock(), schema_context(tenant_alpha.tenant.schema_name):
        assert not Message.objects.filter(conversation_id=conversation_id).exists()
        connection.set_schema_to_public()


def test_a_reply_that_is_streaming_finishes_when_the_server_is_told_to_stop(
    tmp_path: Path, demo_model_url: str, live_conversation: tuple[int, str]
) -> None:
    """A deploy's SIGTERM does not cut a reply that is streaming: the stream runs to its
    `done` event, then the server exits and takes no more connections."""
    conversation_id, token = live_conversation
    with serve(tmp_path, demo_model_url, workers=1, threads=2) as server:
        seen: list[str] = []
        with stream(server, conversation_id, token, "hi #long") as response:
            for kind, _data in events(response):
                seen.append(kind)
                if seen.count("token") == 1 and kind == "token":
                    psutil.Process(server.pid).terminate()
        assert seen[-1] == "done"
        assert seen.count("token") >= 200
        psutil.Process(server.pid).wait(40)
        with pytest.raises(httpx2.ConnectError):
            httpx2.get(f"http://127.0.0.1:{server.port}/healthz", timeout=2)


def test_a_member_removed_while_their_reply_streams_ends_the_turn_cleanly(
    web_server: WebServer, live_conversation: tuple[int, str], tenant_alpha: TenantFixture, django_db_blocker: Any
) -> None:
    """An admin removes the member for good mid-reply: their conversations go with them, so the reply has nowhere
    to be stored. The stream ends with the conversation's `not_found` error, nothing is stored, the conversation's
    hold is given back, and the round the model did is in the ledger (under the member's id, kept) and Redis."""
    from tests.chat.test_turn_while_things_change import hold_left, month_calls

    conversation_id, token = live_conversation
    with django_db_blocker.unblock(), schema_context(tenant_alpha.tenant.schema_name):
        member_id = Conversation.objects.get(pk=conversation_id).user_id
        admin = jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]
        connection.set_schema_to_public()
    calls = counted_calls(tenant_alpha, django_db_blocker)
    log_size = web_server.log.stat().st_size
    seen = deleted_while_streaming(web_server, conversation_id, token, f"/api/users/{member_id}", admin)
    kind, data = seen[-1]
    assert (kind, data.get("code"), data.get("status")) == ("error", "not_found", 404), seen[-3:]
    log = web_server.log.read_text()[log_size:]
    assert "Traceback" not in log
    assert "IntegrityError" not in log
    assert month_calls(tenant_alpha) == calls + 1
    assert not hold_left(tenant_alpha, conversation_id)
    with django_db_blocker.unblock(), schema_context(tenant_alpha.tenant.schema_name):
        assert not Message.objects.filter(conversation_id=conversation_id).exists()
        assert list(UsageEvent.objects.filter(user_id=member_id).values_list("kind", flat=True)) == ["model"]
        connection.set_schema_to_public()


def test_a_member_removed_while_the_model_answers_their_tools_result(
    tmp_path: Path, live_conversation: tuple[int, str], live_hydrology: Any, tenant_alpha: TenantFixture,
    django_db_blocker: Any,
) -> None:  # fmt: skip
    """The turn asked the model, ran hydrology's tool, and asks the model again when the admin removes the member:
    the answer has nowhere to be stored, and the turn ends as a conversation deleted mid-turn, with its three
    calls (model, tool, model) in the ledger and Redis, each once."""
    from tests.chat.test_turn_while_things_change import hold_left, month_calls

    conversation_id, token = live_conversation
    with django_db_blocker.unblock(), schema_context(tenant_alpha.tenant.schema_name):
        member_id = Conversation.objects.get(pk=conversation_id).user_id
        admin = jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]
        connection.set_schema_to_public()
    answers = [[tool_call_chunk("hydrology__list_stations")], [text_chunk("There are "), text_chunk("3.", "stop")]]
    calls = counted_calls(tenant_alpha, django_db_blocker)
    seen: list[str] = []
    with held_model_server(answers, hold=1) as model, serve(tmp_path, model.url, workers=1, threads=4) as server:
        with stream(server, conversation_id, token, "list the stations") as response:
            for kind, _data in events(response):
                seen.append(kind)
                if kind == "tool_result":
                    assert model.asked.wait(30)  # the model is asked again, and has begun its answer
                    removed = httpx2.delete(
                        f"http://127.0.0.1:{server.port}/api/users/{member_id}",
                        headers={"Host": f"alpha.localhost:{server.port}", "Authorization": f"Bearer {admin}"},
                    )
                    assert removed.status_code == 204, removed.text
                    model.go_on.set()
        log = server.log.read_text()
    assert seen[:2] == ["tool_call", "tool_result"]
    assert seen[-1] == "error"
    assert "Traceback" not in log
    assert "IntegrityError" not in log
    assert len(model.requests) == 2
    assert month_calls(tenant_alpha) == calls + 3
    assert not hold_left(tenant_alpha, conversation_id)
    with django_db_blocker.unblock(), schema_context(tenant_alpha.tenant.schema_name):
        assert not Message.objects.filter(conversation_id=conversation_id).exists()
        kinds = list(UsageEvent.objects.filter(user_id=member_id).order_by("id").values_list("kind", flat=True))
        assert kinds == ["model", "tool", "model"]
        connection.set_schema_to_public()


def test_a_reply_still_streaming_at_a_deploy_ends_cleanly_before_the_kill(
    tmp_path: Path, live_conversation: tuple[int, str], tenant_alpha: TenantFixture, django_db_blocker: Any
) -> None:
    """A reply that streams for longer than the deploy's grace is stopped after WEB_TURN_GRACE_SECONDS, as at its
    deadline: the member is told, what came is stored, the round given back, the hold given up. Until 2026-12-08 it
    streamed on until granian killed the worker 30 s after the SIGTERM: the partial reply was lost, the call stayed
    in Redis with no ledger row, and the conversation stayed busy for CHAT_TURN_HOLD_SECONDS."""
    from django.utils import translation

    from apps.chat.engine import stopping_words
    from tests.chat.test_turn_while_things_change import hold_left, month_calls

    conversation_id, token = live_conversation
    answers = [[text_chunk("The river "), text_chunk("is high.", "stop")]]
    calls = counted_calls(tenant_alpha, django_db_blocker)
    seen: list[tuple[str, dict[str, Any]]] = []
    with (
        held_model_server(answers, hold=0) as model,
        serve(tmp_path, model.url, workers=1, threads=2, WEB_TURN_GRACE_SECONDS="0.5") as server,
        stream(server, conversation_id, token, "how is the river?") as response,
    ):
        for kind, data in events(response):
            seen.append((kind, data))
            if kind == "token":
                psutil.Process(server.pid).terminate()
                time.sleep(1.5)  # past the grace, while the model is silent
                model.go_on.set()
        psutil.Process(server.pid).wait(20)
        log = server.log.read_text()
    kind, data = seen[-1]
    assert kind == "error", seen
    with translation.override("zh-hans"):
        assert data["message"] == stopping_words()
    assert "Traceback" not in log
    assert "Killing worker" not in log
    assert not hold_left(tenant_alpha, conversation_id)
    assert month_calls(tenant_alpha) == calls  # the round stopped is given back, as at a turn's deadline
    with django_db_blocker.unblock(), schema_context(tenant_alpha.tenant.schema_name):
        user, failed = Message.objects.filter(conversation_id=conversation_id).order_by("pk")
        assert user.content == "how is the river?"
        assert (failed.role, failed.status, failed.content) == ("assistant", "error", "The river ")
        assert not UsageEvent.objects.filter(user_id=Conversation.objects.get(pk=conversation_id).user_id).exists()
        connection.set_schema_to_public()


def test_a_turn_keeps_its_hold_while_the_model_is_silent_and_a_crash_frees_it_within_the_hold(
    tmp_path: Path, live_conversation: tuple[int, str], tenant_alpha: TenantFixture, django_db_blocker: Any
) -> None:
    """The hold is renewed by its process while the turn lives, not by what the turn reads, so it can be short: a
    worker killed mid-turn leaves its conversation busy for CHAT_TURN_HOLD_SECONDS at most, then the next question
    goes through. Until 2026-12-08 the hold lasted 300 s, long enough for a model's silent wait, and a crash kept
    the conversation busy (409, and the page's "still being written") for 5 minutes."""
    from tests.chat.test_turn_while_things_change import hold_left
    from tests.processes import answers

    conversation_id, token = live_conversation
    answers_ = [[text_chunk("The river "), text_chunk("is high.", "stop")]]
    with (
        held_model_server(answers_, hold=0) as model,
        serve(tmp_path, model.url, workers=1, threads=4, CHAT_TURN_HOLD_SECONDS="2") as server,
    ):
        with stream(server, conversation_id, token, "how is the river?") as response:
            reading = events(response)  # kept: a reader closed would close the connection, and end the turn
            for kind, _data in reading:
                if kind == "token":
                    break
            time.sleep(3)  # the model says nothing for longer than the hold's ttl
            assert hold_left(tenant_alpha, conversation_id)
            (worker,) = psutil.Process(server.pid).children()
            worker.kill()
            killed = time.monotonic()
            while hold_left(tenant_alpha, conversation_id):
                assert time.monotonic() - killed < 3, "the hold outlived its ttl"
                time.sleep(0.1)
        model.go_on.set()
        deadline = time.monotonic() + 30
        while not answers(server.port):  # the worker's replacement
            assert time.monotonic() < deadline
            time.sleep(0.2)
        with stream(server, conversation_id, token, "and now?") as response:
            assert response.status_code == 200
            assert [kind for kind, _data in events(response)][-1] == "done"


def test_a_turn_whose_database_connection_was_ended_meanwhile_stores_its_reply(
    tmp_path: Path, live_conversation: tuple[int, str], tenant_alpha: TenantFixture, django_db_blocker: Any
) -> None:
    """PostgreSQL ends the web server's connections (a restart, a failover, pg_terminate_backend) while a reply
    streams: the turn's writes after it take another connection, and the reply, its ledger row and the next turn
    are as if nothing happened. Until 2026-12-08 the ledger's write failed on the dead connection: the stream broke
    off with no error event, a traceback in the log, the model's answer lost."""
    import psycopg

    from tests import processes
    from tests.chat.test_turn_while_things_change import hold_left, month_calls

    conversation_id, token = live_conversation
    answers = [[text_chunk("The river "), text_chunk("is high.", "stop")]]
    calls = counted_calls(tenant_alpha, django_db_blocker)
    seen: list[str] = []
    with (
        held_model_server(answers, hold=0) as model,
        serve(tmp_path, model.url, workers=1, threads=4) as server,
        stream(server, conversation_id, token, "how is the river?") as response,
    ):
        for kind, _data in events(response):
            seen.append(kind)
            if kind == "token" and not model.go_on.is_set():
                ports = [
                    link.laddr.port
                    for worker in psutil.Process(server.pid).children()
                    for link in worker.net_connections()
                    if link.raddr and link.raddr.port == int(connection.settings_dict["PORT"] or 5432)
                ]
                with psycopg.connect(processes.test_database_url(), autocommit=True) as admin:
                    ended = admin.execute(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND client_port = ANY(%s)",
                        [ports],
                    ).fetchone()
                assert ended is not None
                assert ended[0] >= 1
                time.sleep(0.3)  # the FATAL message reaches the connection's socket
                model.go_on.set()
        log = server.log.read_text()
    assert seen == ["token", "token", "done"]
    assert "Traceback" not in log
    assert not hold_left(tenant_alpha, conversation_id)
    assert month_calls(tenant_alpha) == calls + 1
    with django_db_blocker.unblock(), schema_context(tenant_alpha.tenant.schema_name):
        reply = Message.objects.filter(conversation_id=conversation_id, role="assistant").get()
        assert (reply.status, reply.content) == ("complete", "The river is high.")
        assert UsageEvent.objects.filter(user_id=Conversation.objects.get(pk=conversation_id).user_id).count() == 1
        connection.set_schema_to_public()


@contextmanager
def own_redis() -> Iterator[tuple[str, Any]]:
    """A Redis server of the test's own on a free loopback port (to pause and restart): its URL and a client."""
    import redis

    port = _free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0", client
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def test_a_hold_redis_did_not_let_go_of_at_the_turns_end_is_given_up_once_it_answers(
    tmp_path: Path, live_conversation: tuple[int, str], tenant_alpha: TenantFixture
) -> None:
    """Redis hangs for a moment as a turn ends (CLIENT PAUSE): the turn could not give its hold up, and until
    2026-12-08 the conversation stayed busy, with no turn in it, for the rest of the hold's ttl (then 300 s). Now
    its process gives it up as soon as Redis answers again."""
    conversation_id, token = live_conversation
    answers_ = [[text_chunk("The river "), text_chunk("is high.", "stop")]]
    with (
        own_redis() as (redis_url, redis),
        held_model_server(answers_, hold=0) as model,
        serve(tmp_path, model.url, workers=1, threads=4, REDIS_URL=redis_url, CHAT_TURN_HOLD_SECONDS="9") as server,
    ):
        key = f"{settings.CACHE_KEY_PREFIX}:turn:{tenant_alpha.tenant.schema_name}:{conversation_id}"
        with stream(server, conversation_id, token, "how is the river?") as response:
            seen = []
            for kind, _data in events(response):
                seen.append(kind)
                if kind == "token" and not model.go_on.is_set():
                    redis.execute_command("CLIENT", "PAUSE", "1500", "ALL")
                    model.go_on.set()
        assert seen[-1] == "done"
        ended = time.monotonic()
        while redis.exists(key):
            assert time.monotonic() - ended < 5, "the hold stayed after Redis answered again"
            time.sleep(0.1)
        with stream(server, conversation_id, token, "and now?") as response:
            assert response.status_code == 200
            assert [kind for kind, _data in events(response)][-1] == "done"
