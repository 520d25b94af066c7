"""Reads of conversations, and the access helper that looks one up by id for an actor."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from django.utils.translation import gettext as _

from apps.accounts.permissions import Perm, role_has
from apps.accounts.services import actor_role
from apps.chat.models import Conversation, Message
from apps.core.actors import Actor
from apps.core.exceptions import ApplicationError


def conversation_list(*, actor: Actor, search: str = "", everyone: bool = False) -> QuerySet[Conversation]:
    """The actor's conversations, newest first; everyone's with ``all_conversations``."""
    conversations = Conversation.objects.select_related("user")
    if everyone and _can(actor, Perm.ALL_CONVERSATIONS):
        pass
    elif actor.user is not None:
        conversations = conversations.filter(user=actor.user)
    else:
        conversations = conversations.none()
    if search:
        conversations = conversations.filter(title__icontains=search)
    return conversations.order_by("-updated_at", "-id")


def _can(actor: Actor, perm: Perm) -> bool:
    role = actor_role(actor)
    return role is not None and role_has(role, perm)


def access_conversation(actor: Actor, conversation_id: Any, *, write: bool = False) -> Conversation:
    """A conversation by id: one's own; others' only to read, with ``all_conversations``.

    Missing and invisible look the same (404). Writing to someone else's
    conversation that one may read is refused as read-only (403).
    """
    try:
        pk = int(str(conversation_id))
    except ValueError:
        raise Http404 from None
    conversation = Conversation.objects.filter(pk=pk).first()
    if conversation is None:
        raise Http404
    own = actor.user is not None and conversation.user_id == actor.user.pk
    if own:
        return conversation
    if not _can(actor, Perm.ALL_CONVERSATIONS):
        raise Http404
    if write:
        raise ApplicationError(
            _("Other members' conversations are read-only."), code="permission_denied", status_code=403
        )
    return conversation


def message_list(conversation: Conversation) -> QuerySet[Message]:
    return conversation.messages.order_by("created_at", "id")


def model_history(conversation: Conversation, *, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` messages as the model reads them, starting at a user message.

    Tool results always follow the assistant message that asked for them, and a
    window never starts in the middle of such a group.
    """
    fields = ("role", "content", "tool_calls", "tool_call_id")
    rows = conversation.messages.exclude(status="error").order_by("-created_at", "-id").values(*fields)
    recent = list(rows[:limit])[::-1]
    while recent and recent[0]["role"] != "user":
        recent.pop(0)
    answered = {m["tool_call_id"] for m in recent if m["role"] == "tool"}
    history: list[dict[str, Any]] = []
    for message in recent:
        if message["role"] == "tool":
            history.append({"role": "tool", "tool_call_id": message["tool_call_id"], "content": message["content"]})
            continue
        # A call whose result was never stored (the turn was cut short) is left out: the
        # model server would refuse a tool call without its result.
        calls = [c for c in message["tool_calls"] if c["id"] in answered] if message["role"] == "assistant" else []
        if calls:
            history.append(
                {
                    "role": "assistant",
                    "content": message["content"] or None,
                    "tool_calls": [_openai_call(c) for c in calls],
                }
            )
        elif message["content"]:
            history.append({"role": message["role"], "content": message["content"]})
    return history


def _openai_call(call: dict[str, Any]) -> dict[str, Any]:
    return {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}
