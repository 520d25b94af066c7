"""The chat page asked for while a turn still holds its conversation: a page left mid-reply lands on the next one
before the server has stored what came of the reply.

Not in a test transaction: the turn's reply is stored from another thread, committed, as the web server's
request that streamed it stores it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connections
from django.test import Client
from django_tenants.utils import schema_context

from apps.accounts.models import User
from apps.chat import selectors
from apps.chat.models import Conversation, Message
from apps.tenants.db import connection
from apps.usage.scripts import redis_client
from tests.conftest import ADMIN_PASSWORD, TenantFixture, make_member


@dataclass(frozen=True)
class Asked:
    """A member's conversation whose question's turn holds it, the hold's key, and the member's client."""

    conversation: Conversation
    hold: str
    client: Client


@pytest.fixture
def asked(django_db_blocker: Any, tenant_alpha: TenantFixture) -> Iterator[Asked]:
    schema = tenant_alpha.tenant.schema_name
    with django_db_blocker.unblock():
        member = make_member(tenant_alpha, "user")
        with schema_context(schema):
            conversation = Conversation.objects.create(user=member, title="Levels")
            Message.objects.create(conversation=conversation, role="user", content="Levels at S001?")
        client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en")
        assert client.post("/login/", {"username": member.email, "password": ADMIN_PASSWORD}).status_code == 302
        hold = selectors.turn_hold_key(schema, conversation.pk)
        redis_client().set(hold, "the streaming request", px=10_000)
        yield Asked(conversation, hold, client)
        redis_client().delete(hold)
        with schema_context(schema):
            Conversation.objects.filter(pk=conversation.pk).delete()
            User.objects.filter(pk=member.pk).delete()
        connection.set_schema_to_public()


def test_the_page_waits_for_the_turn_to_store_its_partial_reply(
    django_db_blocker: Any, tenant_alpha: TenantFixture, asked: Asked
) -> None:
    """QA's race: the next page rendered in 0.19 s, the partial reply was stored at 0.24 s; the page showed the
    question alone and "Try again" (which the turn, still running, refused with conversation_busy)."""

    def the_turn_ends() -> None:  # as the streaming request does: stores what came, then gives the hold up
        time.sleep(0.3)
        try:
            with schema_context(tenant_alpha.tenant.schema_name):
                Message.objects.create(conversation=asked.conversation, role="assistant",
                                       content="S001 stands at 2.31 m", status="incomplete")  # fmt: skip
            redis_client().delete(asked.hold)
        finally:
            connections.close_all()

    ending = threading.Thread(target=the_turn_ends)
    with django_db_blocker.unblock():
        ending.start()
        started = time.monotonic()
        page = asked.client.get(f"/chat/{asked.conversation.pk}/").content.decode()
    ending.join()
    assert time.monotonic() - started < selectors.TURN_WAIT_SECONDS
    assert "S001 stands at 2.31 m" in page
    assert "This reply stopped before it was complete." in page
    assert 'data-testid="chat-retry"' in page
    assert 'data-testid="chat-writing"' not in page


def test_a_turn_still_under_way_is_said_to_be_and_not_offered_again(
    django_db_blocker: Any, asked: Asked, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(selectors, "TURN_WAIT_SECONDS", 0.2)
    with django_db_blocker.unblock():
        page = asked.client.get(f"/chat/{asked.conversation.pk}/").content.decode()
        redis_client().delete(asked.hold)
        after = asked.client.get(f"/chat/{asked.conversation.pk}/").content.decode()
    assert "Levels at S001?" in page
    assert "A reply is still being written in this conversation: it will show here once it is done." in page
    assert 'data-testid="chat-retry"' not in page
    assert 'data-testid="chat-retry"' in after  # the turn ended without a reply: it can be asked again
    assert 'data-testid="chat-writing"' not in after
