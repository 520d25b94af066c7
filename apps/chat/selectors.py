"""Reads of conversations, and the access helper that looks one up by id for an actor."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db.models import Case, F, OuterRef, Q, QuerySet, Subquery, TextField, Value, When
from django.db.models.functions import Coalesce, Concat, Greatest, Length, Lower, StrIndex, Substr
from django.http import Http404
from django.utils.translation import gettext as _
from redis.exceptions import RedisError

from apps.accounts.permissions import Perm, role_has
from apps.accounts.services import actor_role
from apps.chat.models import Conversation, Message, Role, Status
from apps.core.actors import Actor
from apps.core.exceptions import ApplicationError
from apps.core.templatetags.times import zoned
from apps.tenants.db import connection
from apps.usage.scripts import redis_client

# What a search shows of a message that matched: the match, with this much before it, as plain text.
MATCH_LEAD_CHARS = 40
MATCH_CHARS = 140


def conversation_list(*, actor: Actor, search: str = "", everyone: bool = False) -> QuerySet[Conversation]:
    """The actor's conversations, newest first; everyone's with ``all_conversations``.

    ``search`` finds it in the title or in what was said: a question or an answer, not a tool's output or
    a failed turn's error. Each found conversation has ``match``: a window of the latest message that
    contains it, with "…" where the message goes on ("" when only the title matches).
    """
    conversations = Conversation.objects.select_related("user")
    if everyone and _can(actor, Perm.ALL_CONVERSATIONS):
        pass
    elif actor.user is not None:
        conversations = conversations.filter(user=actor.user)
    else:
        conversations = conversations.none()
    search = search.replace("\x00", "")  # PostgreSQL refuses NUL in a pattern; no text holds one
    if search:
        start = Greatest(F("at") - MATCH_LEAD_CHARS, 1)  # where the window begins (1-based)
        said = (
            Message.objects.filter(
                conversation=OuterRef("pk"), role__in=(Role.USER, Role.ASSISTANT), content__icontains=search
            )
            .exclude(status=Status.ERROR)
            .annotate(at=StrIndex(Lower("content"), Lower(Value(search))))
            .annotate(start=start)
            .annotate(
                window=Concat(
                    Case(When(start__gt=1, then=Value("…")), default=Value(""), output_field=TextField()),
                    Substr("content", start, MATCH_CHARS),
                    Case(
                        When(start__lt=Length("content") - MATCH_CHARS + 1, then=Value("…")),
                        default=Value(""),
                        output_field=TextField(),
                    ),
                    output_field=TextField(),
                )
            )
            .order_by("-id")
        )
        conversations = conversations.annotate(
            match=Coalesce(Subquery(said.values("window")[:1]), Value(""), output_field=TextField())
        ).filter(Q(title__icontains=search) | ~Q(match=""))
    return conversations.order_by("-updated_at", "-id")


def _can(actor: Actor, perm: Perm) -> bool:
    role = actor_role(actor)
    return role is not None and role_has(role, perm)


def access_conversation(
    actor: Actor, conversation_id: Any, *, write: bool = False, with_history: int = 0
) -> Conversation:
    """A conversation by id: one's own; others' only to read, with ``all_conversations``.

    Missing and invisible look the same (404). Writing to someone else's
    conversation that one may read is refused as read-only (403).
    ``with_history=n`` brings its last ``n`` messages for :func:`model_history`
    along in the same query.
    """
    try:
        pk = int(str(conversation_id))
    except ValueError:
        raise Http404 from None
    conversation = _with_history(pk, with_history) if with_history else Conversation.objects.filter(pk=pk).first()
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


# A chat turn reads the conversation and its recent history before it can call the model, so
# both are one hand-written statement: the ORM spent about 1.5 ms building the two queries,
# against 0.3 ms to run them (docs/benchmarks.md, chat time to first token). The messages come
# oldest first, as json objects; error replies are left out, as the model never saw them.
_HISTORY_SQL = """
    (SELECT coalesce(json_agg(json_build_object('id', m.id, 'role', m.role, 'content', m.content,
                                                'tool_calls', m.tool_calls, 'tool_call_id', m.tool_call_id,
                                                'replaces', m.replaces_id)
                              ORDER BY m.created_at, m.id), '[]')
       FROM (SELECT id, role, content, tool_calls, tool_call_id, replaces_id, created_at FROM {messages}
              WHERE conversation_id = {conversation} AND status <> %s
              ORDER BY created_at DESC, id DESC LIMIT %s) m)
"""


@lru_cache(maxsize=1)
def _conversation_sql() -> tuple[str, tuple[str, ...]]:
    fields = tuple(field.attname for field in Conversation._meta.concrete_fields)
    columns = ", ".join(f'c."{field.column}"' for field in Conversation._meta.concrete_fields)
    history = _HISTORY_SQL.format(conversation="c.id", messages=Message._meta.db_table)
    return f"SELECT {columns}, {history} FROM {Conversation._meta.db_table} c WHERE c.id = %s", fields


def _with_history(pk: int, limit: int) -> Conversation | None:
    sql, fields = _conversation_sql()
    with connection.cursor() as cursor:
        cursor.execute(sql, [Status.ERROR.value, limit, pk])
        row = cursor.fetchone()
    if row is None:
        return None
    conversation = Conversation.from_db(connection.alias, fields, row[:-1])
    conversation.recent_messages = row[-1]  # type: ignore[attr-defined]  # json: psycopg parses it
    return conversation


def message_list(conversation: Conversation) -> QuerySet[Message]:
    return conversation.messages.order_by("created_at", "id")


def latest_messages(conversation: Conversation, *, limit: int) -> tuple[list[Message], int]:
    """The conversation's last ``limit`` messages, oldest first, and how many come before them.

    Two queries however long the conversation is: a conversation of 3,000 messages with tool results
    was read and sent whole (38 MB of JSON from the API, 62 MB of HTML on the chat page's "Show all").
    The messages run to the conversation's end, so ``replaced_replies`` applies to them.
    """
    every = message_list(conversation)
    earlier = max(0, every.count() - limit)
    return list(every[earlier:]), earlier


def replaced_replies(messages: Sequence[Message]) -> set[int]:
    """The ids of the messages among ``messages`` that no longer stand: replies answered again ("Try again",
    "Regenerate"), which a later message names in ``replaces`` (``apps.chat.services.conversation_retry``), and
    a question that was edited, with everything that answered it, up to the question that replaces it
    (``conversation_edit``).

    For a list that runs to the conversation's end (a replacement always comes later);
    ``replaced_among`` for a page of it.
    """
    return _replaced([(m.pk, m.role, m.replaces_id) for m in messages])


def _replaced(messages: Sequence[tuple[int, str, int | None]]) -> set[int]:
    """``replaced_replies`` over (id, role, replaces) in the conversation's order.

    A question that replaces another is an edit (a retry's replacement is a reply): the messages between
    the two, by id, answered the edited one. By id, so the edited question need not be among ``messages``.
    """
    replaced = {replaces for _pk, _role, replaces in messages if replaces is not None}
    edits = [(replaces, pk) for pk, role, replaces in messages if replaces is not None and role == Role.USER]
    if edits:
        replaced.update(pk for pk, _role, _replaces in messages if any(old < pk < new for old, new in edits))
    return replaced


def replaced_among(conversation: Conversation, ids: Sequence[int]) -> set[int]:
    """Which of the messages ``ids`` (of ``conversation``) no longer stand, wherever their replacements are:
    one query. An edited question's turn is the messages between it and the question that replaces it."""
    if not ids:
        return set()
    replacements = Message.objects.filter(conversation=conversation, replaces__isnull=False).values_list(
        "id", "role", "replaces_id"
    )
    return _replaced([*((pk, "", None) for pk in ids), *replacements]) & set(ids)


class TurnState:
    EMPTY = "empty"  # no question yet
    UNANSWERED = "unanswered"  # the last question's turn failed, was stopped or was cut short
    ANSWERED = "answered"  # the last question has its complete answer
    WRITING = "writing"  # a turn still holds the conversation: its reply is being written


# How long the chat page waits for a turn that still holds its conversation, and how often it looks. A page
# left while its reply streamed asks for the next one at once; the server notices the client went away and
# stores the partial reply a moment later (0.05 s after the next page was served, in QA's timing).
TURN_WAIT_SECONDS = 1.5
TURN_POLL_SECONDS = 0.05


def turn_hold_key(schema: str, conversation_id: int) -> str:
    """The Redis key a turn holds while it runs in the conversation (``apps.chat.services.turn_hold``)."""
    return f"{settings.CACHE_KEY_PREFIX}:turn:{schema}:{conversation_id}"


def turn_under_way(conversation: Conversation, *, wait_seconds: float | None = None) -> bool:
    """Whether a turn still holds ``conversation`` after waiting up to ``wait_seconds`` (TURN_WAIT_SECONDS) for it
    to give the hold up, which it does once everything of it is stored. Redis unreachable: no turn is known."""
    key = turn_hold_key(connection.schema_name, conversation.pk)
    deadline = time.monotonic() + (TURN_WAIT_SECONDS if wait_seconds is None else wait_seconds)
    try:
        client = redis_client()
        while client.exists(key):
            if time.monotonic() >= deadline:
                return True
            time.sleep(TURN_POLL_SECONDS)
    except RedisError:
        return False
    return False


def turn_state(conversation: Conversation, *, last: Message | None = None) -> str:
    """Where the conversation's last turn stands; failed replies (status ``error``) are no answer.

    Either of the last two may be answered again (``apps.chat.services.conversation_retry``):
    "Try again" and "Regenerate" on the page. ``last``: the latest message that did not fail,
    when the caller has read it already (the chat page); read here otherwise.
    """
    if last is None:
        last = (
            conversation.messages.exclude(status=Status.ERROR)
            .order_by("-created_at", "-id")
            .only("role", "status", "tool_calls")
            .first()
        )
    if last is None:
        return TurnState.EMPTY
    if last.role == Role.ASSISTANT and last.status == Status.COMPLETE and not last.tool_calls:
        return TurnState.ANSWERED
    return TurnState.UNANSWERED


def _answered_calls(recent: list[dict[str, Any]]) -> dict[int, set[str]]:
    """The ids of each assistant message's calls whose results were stored: the tool messages right after it.

    By message, not over the whole window: servers that send no ids get ``call_<n>`` from some gateways, and
    one whose ids repeat across turns had an earlier turn's result count for a later call that failed, whose
    assistant message then went to the model server without its result, which refused every later turn.
    """
    answered: dict[int, set[str]] = {}
    current: set[str] | None = None
    for message in recent:
        if message["role"] == "assistant":
            current = answered.setdefault(message["id"], set())
        elif message["role"] == "tool" and current is not None:
            current.add(message["tool_call_id"])
        else:
            current = None
    return answered


def model_history(conversation: Conversation, *, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` messages as the model reads them, starting at a user message.

    Tool results always follow the assistant message that asked for them, and a
    window never starts in the middle of such a group. A conversation read by
    ``access_conversation(..., with_history=n)`` (n >= ``limit``) brings them along.
    """
    recent = _recent_messages(conversation, limit)[-limit:] if limit > 0 else []
    while recent and recent[0]["role"] != "user":
        recent.pop(0)
    answered = _answered_calls(recent)
    # Answered again or edited: the newer reply, the edited question and its answer stand.
    replaced = _replaced([(m["id"], m["role"], m.get("replaces")) for m in recent])
    history: list[dict[str, Any]] = []
    for message in recent:
        if message["id"] in replaced:
            continue
        if message["role"] == "tool":
            history.append({"role": "tool", "tool_call_id": message["tool_call_id"], "content": message["content"]})
            continue
        # A call whose result was never stored (the turn was cut short) is left out: the
        # model server would refuse a tool call without its result.
        mine = answered.get(message["id"], set())
        calls = [c for c in message["tool_calls"] if c["id"] in mine] if message["role"] == "assistant" else []
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


def _recent_messages(conversation: Conversation, limit: int) -> list[dict[str, Any]]:
    """The conversation's last messages that did not fail (at least ``limit``), oldest first, as
    ``_HISTORY_SQL`` gives them: brought along by ``access_conversation(..., with_history=n)``, else read."""
    recent = getattr(conversation, "recent_messages", None)
    if recent is None:
        with connection.cursor() as cursor:
            history_sql = _HISTORY_SQL.format(conversation="%s", messages=Message._meta.db_table)
            cursor.execute(f"SELECT {history_sql}", [conversation.pk, Status.ERROR.value, limit])
            recent = cursor.fetchone()[0]
    return recent


def reply_to_replace(conversation: Conversation, *, limit: int) -> int | None:
    """The id of the reply a turn answering the last question again replaces: the last message that did
    not fail, if it is a plain reply (no tool calls; complete or cut short). None after a failed turn."""
    recent = _recent_messages(conversation, limit)
    last = recent[-1] if recent else None
    if last is None or last["role"] != Role.ASSISTANT or last["tool_calls"]:
        return None
    return int(last["id"])


def last_question(conversation: Conversation, *, limit: int) -> int | None:
    """The id of the conversation's last question (a user message), None before the first one."""
    for message in reversed(_recent_messages(conversation, limit)):
        if message["role"] == Role.USER:
            return int(message["id"])
    return None


def is_plain_reply(message: dict[str, Any]) -> bool:
    """An assistant reply, in the model's history, that asks for no tools."""
    return message["role"] == "assistant" and "tool_calls" not in message


def _openai_call(call: dict[str, Any]) -> dict[str, Any]:
    return {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}


def conversation_markdown(conversation: Conversation) -> str:
    """The whole conversation as a Markdown document, as a member downloads it.

    Every stored message in order: the questions (edited ones marked so), the answers (failed,
    cut-short and replaced ones marked so), and each tool call with its arguments and result. The messages' own text
    is Markdown already; the parts around it are plain, so the file reads well as text too.
    """
    # gettext outside the f-strings: xgettext does not read inside them.
    untitled, question, answer, calls = _("New conversation"), _("Question"), _("Answer"), _("Calls the tool")
    # A stored reply that stopped early: stopped by its member, or its client went away (the page's word for a
    # connection lost while it watches is "cut short").
    cut_short, tool_label = _("This reply stopped before it was complete."), _("Tool")
    answered_again, edited = _("Answered again below."), _("Edited and asked again below.")
    lines = [f"# {conversation.title or untitled}", ""]
    # In the zone the pages show times in, named ("2026-12-07 18:13 UTC+8"), as they name it.
    details = [zoned(conversation.created_at)]
    if conversation.model:
        details.append(conversation.model)
    lines += [" · ".join(details), ""]
    messages = list(message_list(conversation))
    replaced = replaced_replies(messages)
    again = {message.replaces_id for message in messages if message.replaces_id is not None}
    for message in messages:
        if message.role == Role.USER:
            lines += [f"## {question}", "", message.content, ""]
            if message.pk in replaced:
                lines += [f"*{edited}*", ""]
        elif message.role == Role.ASSISTANT:
            for call in message.tool_calls:
                lines += [f"> {calls} `{call.get('name', '')}`", ""]
            if not message.content and message.status == Status.COMPLETE:
                continue
            lines += [f"## {answer}", ""]
            if message.content:
                lines += [message.content, ""]
            if message.status == Status.INCOMPLETE:  # why, where the model server said (its content filter)
                lines += [f"*{message.error_text or cut_short}*", ""]
            elif message.status == Status.ERROR:
                failed = _("The reply failed: %(error)s") % {"error": message.error_text}
                lines += [f"*{failed}*", ""]
            if message.pk in again:  # an edited question's replies are under its own mark
                lines += [f"*{answered_again}*", ""]
        elif message.role == Role.TOOL:
            arguments = json.dumps(message.arguments, ensure_ascii=False, indent=2)
            lines += [f"### {tool_label} `{message.service}.{message.tool}`", ""]
            lines += [*_fenced(arguments, "json"), "", *_fenced(message.content), ""]
    return "\n".join(lines).rstrip() + "\n"


def _fenced(text: str, info: str = "") -> list[str]:
    """A fenced code block whose fence no run of tildes in ``text`` can close early."""
    longest = max((len(run) for run in re.findall(r"~+", text)), default=0)
    fence = "~" * max(3, longest + 1)
    return [f"{fence}{info}", text, fence]
