"""A free workspace whose storage is used up gets out of it by deleting conversations (apps.usage.services)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django_redis import get_redis_connection
from django_tenants.utils import schema_context

from apps.accounts.models import User
from apps.chat.models import Conversation, Message
from apps.chat.services import conversation_delete
from apps.core.actors import Actor
from apps.tenants.db import connection
from apps.tenants.models import Tenant
from apps.usage.meter import storage_key
from apps.usage.services import storage_measure
from apps.usage.tasks import reclaim_storage
from tests.conftest import drop_tenant, provision

SLUG = "reclaim"


@pytest.fixture
def full(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Tenant]:
    """A committed free workspace (100 MB) with 1 MB of storage allowed, and a conversation of about 2 MB stored."""
    with django_db_blocker.unblock():
        tenant = provision(SLUG, plan="free").tenant
        tenant.storage_mb_override = 1
        tenant.save()
        with schema_context(tenant.schema_name):
            admin = User.objects.get()
            conversation = Conversation.objects.create(user=admin, title="big")
            # Not compressible (TOAST compresses): each message 30 kB of distinct text.
            Message.objects.bulk_create(
                Message(conversation=conversation, role="user", content=" ".join(f"{n}-{i}" for i in range(4000)))
                for n in range(100)
            )
        connection.set_schema_to_public()
        fresh = Tenant.objects.select_related("plan").get(pk=tenant.pk)
    try:
        yield fresh
    finally:
        with django_db_blocker.unblock():
            key = f"{storage_key(tenant.schema_name)}:reclaim"
            get_redis_connection("default").delete(key, f"{key}:next")
            drop_tenant(SLUG)


def test_deleting_conversations_gives_the_space_back_to_the_quota(
    full: Tenant, django_db_blocker: Any, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    queued: list[str] = []
    monkeypatch.setattr(
        reclaim_storage, "apply_async", lambda **options: queued.append(options["headers"]["_schema_name"])
    )
    with django_db_blocker.unblock(), schema_context(full.schema_name):
        before = storage_measure(tenant=full)
        assert before > 2_000_000  # past the 1 MB allowed
        conversation = Conversation.objects.get()
        with django_capture_on_commit_callbacks(execute=True):
            conversation_delete(actor=Actor(user=conversation.user), conversation=conversation)
        assert queued == [full.schema_name]
        assert storage_measure(tenant=full) > before * 0.9  # the pages are the table's still
        after = reclaim_storage.apply().get()
        connection.set_schema_to_public()
    assert after < before / 2
    assert int(get_redis_connection("default").get(storage_key(full.schema_name))) == after  # the quota reads it


def test_a_paid_plan_reuses_its_pages_and_is_not_rewritten(
    full: Tenant, django_db_blocker: Any, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    queued: list[str] = []
    monkeypatch.setattr(
        reclaim_storage, "apply_async", lambda **options: queued.append(options["headers"]["_schema_name"])
    )
    with django_db_blocker.unblock():
        from apps.plans.models import Plan

        Tenant.objects.filter(pk=full.pk).update(plan=Plan.objects.get(code="pro"))
        with schema_context(full.schema_name):
            conversation = Conversation.objects.get()
            with django_capture_on_commit_callbacks(execute=True):
                conversation_delete(actor=Actor(user=conversation.user), conversation=conversation)
        connection.set_schema_to_public()
    assert queued == []


def test_a_delete_soon_after_another_queues_a_reclaim_for_later_and_so_does_removing_a_member(
    full: Tenant, django_db_blocker: Any, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    """A second delete within RECLAIM_EVERY_SECONDS queued nothing, ever: the workspace stayed refused until the
    periodic measurement happened to see the space; a removed member's conversations queued nothing at all."""
    from apps.accounts.models import Role
    from apps.accounts.services import user_delete
    from apps.usage.services import RECLAIM_EVERY_SECONDS

    queued: list[int] = []
    monkeypatch.setattr(reclaim_storage, "apply_async", lambda **options: queued.append(options.get("countdown", 0)))
    with django_db_blocker.unblock(), schema_context(full.schema_name):
        admin = User.objects.get()
        member = User.objects.create_user(email="m@reclaim.example.com", password=None, role=Role.USER)
        for owner in (admin, admin, member, member):
            Conversation.objects.create(user=owner, title="x")
        first, second = Conversation.objects.filter(user=admin)[:2]
        with django_capture_on_commit_callbacks(execute=True):
            conversation_delete(actor=Actor(user=admin), conversation=first)
            conversation_delete(actor=Actor(user=admin), conversation=second)
            conversation_delete(actor=Actor(user=admin), conversation=Conversation.objects.create(user=admin))
        assert queued[0] == 0  # at once
        assert 0 < queued[1] <= RECLAIM_EVERY_SECONDS  # when the first one's time is up
        assert len(queued) == 2  # the third: one is queued for then already
        key = f"{storage_key(full.schema_name)}:reclaim"
        get_redis_connection("default").delete(key, f"{key}:next")  # their time is up
        with django_capture_on_commit_callbacks(execute=True):
            user_delete(actor=Actor(user=admin), user=member)
        connection.set_schema_to_public()
    assert queued[2:] == [0]
