"""Writes to conversations, and the chat turn that stores what the engine streams."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Generator, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import psycopg
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.accounts.permissions import Perm, role_has
from apps.accounts.selectors import api_key_by_prefix, user_by_id
from apps.accounts.services import actor_role
from apps.audit.services import audit_record
from apps.chat import engine
from apps.chat.markdown import render
from apps.chat.models import Conversation, Message, Role, Status
from apps.chat.selectors import is_plain_reply, last_question, model_history, reply_to_replace, turn_hold_key
from apps.core.actors import Actor
from apps.core.exceptions import ApplicationError, InvalidInput
from apps.core.languages import Words, in_each_language
from apps.core.models import storable
from apps.core.text import has_control_characters, one_line
from apps.llm.client import ModelServer, choose_model, model_server
from apps.llm.setup_cache import AiSetup, ai_setup, ai_setup_key
from apps.mcp.tool_names import MAX_TOOLS_PER_REQUEST
from apps.tenants.models import Tenant, TenantStatus
from apps.tenants.selectors import tenant_current
from apps.usage.limits import limits_for
from apps.usage.meter import Claim, Meter, Ticket
from apps.usage.services import storage_changed, storage_freed

logger = logging.getLogger(__name__)


class ConversationGone(ApplicationError):
    """The conversation was deleted while its turn ran (from another tab, say): nothing more is stored."""

    status_code = 404
    code = "not_found"

    def __init__(self) -> None:
        super().__init__(_("This conversation was deleted while the reply was being written."))


SYSTEM_PROMPT = (
    "You are HydroNet, an assistant for water-network and hydrology work. Answer in the language of the "
    "user's message. When a tool can give facts about stations, water levels, rainfall or warnings, use it "
    "rather than guessing, and say which data you used. Keep answers short and precise; use Markdown."
)
TITLE_LENGTH = 60


def system_prompt(instructions: str = "") -> str:
    """HydroNet's prompt, then the workspace admins' instructions (apps.llm AssistantSettings), if any."""
    if not instructions:
        return SYSTEM_PROMPT
    return f"{SYSTEM_PROMPT}\n\nThis workspace's administrators add these instructions:\n{instructions}"


def _valid_title(title: str) -> str:
    title = " ".join((title or "").split())  # one line: line breaks and tabs become spaces
    if has_control_characters(title):
        message = _("A title cannot hold control characters.")
        raise InvalidInput(message, details={"title": [message]})
    if len(title) > 200:
        message = _("Use at most 200 characters.")
        raise InvalidInput(message, details={"title": [message]})
    return title


@transaction.atomic
def conversation_create(*, actor: Actor, title: str = "", model: str | None = None) -> Conversation:
    assert actor.user is not None
    model = choose_model(model_server(), model) if model else ""
    Meter.for_actor(actor).check_storage()
    return Conversation.objects.create(user=actor.user, title=_valid_title(title), model=model)


@transaction.atomic
def conversation_rename(*, actor: Actor, conversation: Conversation, title: str) -> Conversation:
    title, now = _valid_title(title), timezone.now()
    if not Conversation.objects.filter(pk=conversation.pk).update(title=title, updated_at=now):
        raise Http404  # deleted since it was read (another tab)
    conversation.title, conversation.updated_at = title, now
    return conversation


@transaction.atomic
def conversation_delete(*, actor: Actor, conversation: Conversation) -> None:
    # Locked first: of two deletes at once, the second finds nothing (404), not a second audit event.
    if not Conversation.objects.select_for_update().filter(pk=conversation.pk).exists():
        raise Http404
    audit_record(
        actor=actor,
        action="conversation.deleted",
        target=conversation,
        metadata={"messages": conversation.messages.count()},
    )
    conversations_purge(conversations=Conversation.objects.filter(pk=conversation.pk))
    storage_freed(tenant=tenant_current())


def conversations_purge(*, conversations: QuerySet[Conversation]) -> int:
    """Delete ``conversations`` and their messages in two statements, whatever their number; returns how many
    messages went. In the transaction of the action that deletes them, which records it.

    Django's ``delete()`` reads every row it deletes first (django-tenants' post_delete receiver listens to every
    model, so none is deleted fast) and clears ``replaces`` 100 rows at a time: a conversation of 3,000 messages,
    500 of them tool results of 64 KB, took 40 queries, 0.4 s and 36 MB of memory, and a member with 5,000
    conversations 219 queries, 1.2 s and 52 MB. A message and what replaces it go in the same statement, so the
    (deferred) foreign key of ``replaces`` holds.
    """
    sql, params = conversations.values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {Message._meta.db_table} WHERE conversation_id IN ({sql})", params)
        messages = int(cursor.rowcount)
        cursor.execute(f"DELETE FROM {Conversation._meta.db_table} WHERE id IN ({sql})", params)
    return messages


# --- The chat turn -------------------------------------------------------------------


@dataclass(frozen=True)
class ChatEvent:
    """What the client sees: ``token``, ``tool_call``, ``tool_result``, ``done`` or ``error``.

    ``reply``: with ``done``, the stored reply, for an answer that shows it whole (not sent in the event).
    """

    type: str
    data: dict[str, Any]
    reply: Message | None = None


def _check_content(content: str) -> str:
    content = (content or "").strip()
    if not content:
        message = _("Write a message first.")
        raise InvalidInput(message, details={"content": [message]})
    if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
        message = _("A message may be at most %(limit)d characters.") % {"limit": settings.CHAT_MAX_MESSAGE_CHARS}
        raise InvalidInput(message, code="message_too_long", details={"content": [message]})
    return content


def tools_for(actor: Actor, setup: AiSetup | None = None) -> list[engine.BoundTool]:
    """The tenant's MCP tools the actor's turn may offer the model: none without use_mcp_services,
    and none when CHAT_MAX_TOOL_ROUNDS is 0; at most MAX_TOOLS_PER_REQUEST, in the services' order (by
    name) and each server's own."""
    role = actor_role(actor)
    if settings.CHAT_MAX_TOOL_ROUNDS <= 0 or role is None or not role_has(role, Perm.USE_MCP_SERVICES):
        return []
    tools = engine.bind_tools((setup or ai_setup()).services)
    if len(tools) > MAX_TOOLS_PER_REQUEST:  # OpenAI refuses the request: the first ones, by service name
        logger.warning("%d MCP tools are offered; the model gets the first %d", len(tools), MAX_TOOLS_PER_REQUEST)
        tools = tools[:MAX_TOOLS_PER_REQUEST]
    return tools


@dataclass(frozen=True)
class TurnStart:
    """A turn's first model call, charged, and what it is sent to."""

    ticket: Ticket
    setup: AiSetup
    server: ModelServer
    model: str


@dataclass
class TurnRecheck:
    """What a running turn reads again before each AI call after its first (``engine.run_turn``'s ``recheck``).

    A turn runs for seconds to minutes; the workspace may change meanwhile. The call under way finishes (the
    model is already at work, and paid for), but no new call starts for a member who was deactivated, removed
    or no longer has ``permission``, for an API key revoked, expired or deleted, or in a workspace suspended or
    cancelled: the turn ends there with an error, what the model said so far kept. A plan or limit changed
    counts from the next call (the meter's limits are read again). The model server and the tools are the
    workspace's as they are now: a tool turned off or removed is not run, an edited service is called at its
    new address, and a turn whose model was taken off the list stops. Logging out does not stop a turn, as
    it does not end the access token that started it. docs/architecture.md, "A turn while the workspace
    changes".
    """

    actor: Actor
    meter: Meter
    model: str
    permission: Perm = Perm.CREATE_CONVERSATION

    def __call__(self) -> engine.Current:
        tenant = Tenant.objects.select_related("plan").filter(pk=self.meter.tenant.pk).first()
        if tenant is None or tenant.is_blocked:
            raise _blocked_error(tenant)
        self.meter.tenant, self.meter.limits = tenant, limits_for(tenant)
        actor = _actor_now(self.actor)
        role = actor_role(actor) if actor is not None else None
        if actor is None or role is None or not role_has(role, self.permission):
            raise ApplicationError(_access_changed_words, code="access_changed", status_code=403)
        setup = ai_setup()
        server = model_server(setup.provider)
        if self.model not in server.models:
            raise ApplicationError(
                partial(_model_withdrawn_words, self.model), code="model_unavailable", status_code=409
            )
        return engine.Current(server=server, tools=tools_for(actor, setup))


def _actor_now(actor: Actor) -> Actor | None:
    """``actor`` as its row is now: None once the member is inactive or gone, or the key unusable or gone."""
    if actor.user is not None:
        user = user_by_id(actor.user.pk)
        return replace(actor, user=user) if user is not None and user.is_active else None
    if actor.api_key is not None:
        key = api_key_by_prefix(actor.api_key.prefix)
        usable = key is not None and key.pk == actor.api_key.pk and key.is_usable
        return replace(actor, api_key=key) if usable else None
    return None


def _blocked_error(tenant: Tenant | None) -> ApplicationError:
    """A suspended or cancelled workspace's refusal, as its hosts answer (apps.tenants.middleware)."""
    if tenant is not None and tenant.status == TenantStatus.SUSPENDED:
        return ApplicationError(_suspended_words, code="tenant_suspended", status_code=403)
    return ApplicationError(_cancelled_words, code="tenant_cancelled", status_code=403)


def _suspended_words() -> str:
    return _("This workspace is suspended. Contact its administrator.")


def _cancelled_words() -> str:
    return _("This workspace has been cancelled.")


def _access_changed_words() -> str:
    return _("Your access to this workspace changed while this reply was being written, so it was stopped.")


def _model_withdrawn_words(model: str) -> str:
    return _("The model “%(model)s” was taken off this workspace's list while this reply was being written, so it "
             "was stopped. Ask again to use another.") % {"model": model}  # fmt: skip


def turn_hold(schema: str, conversation: Conversation) -> Claim:
    """The claim a turn holds on its conversation, so that two turns never run in it at once: their messages
    would interleave, and which reply or question stands replaced could no longer be told by their order."""
    return Claim(
        key=turn_hold_key(schema, conversation.pk),
        token=uuid.uuid4().hex,
        ttl_ms=settings.CHAT_TURN_HOLD_SECONDS * 1000,
        refusal=ApplicationError(
            _("A reply is still being written in this conversation. Wait for it to finish, or stop it, then try "
              "again."), code="conversation_busy", status_code=409,
        ),
    )  # fmt: skip


def turn_start(*, meter: Meter, model: str | None, kept: str = "") -> TurnStart:
    """Charge a turn's first model call, reading the tenant's AI setup in the same Redis round trip.

    ``model``, asked for by the client, must be offered; ``kept``, the conversation's model, is used while it
    is offered, else the default: a model the admins took off the list would make the conversation
    unusable for a client that names none (the chat page shows no choice with one model).

    What can still refuse the turn after that (no model server, an unknown model)
    gives the call back, and the quota alerts it would cross are raised only once
    it goes ahead.
    """
    ticket = meter.charge("model", also_get=ai_setup_key(), alert=False)
    try:
        setup = ai_setup(prefetched=ticket.fetched)
        server = model_server(setup.provider)
        chosen = choose_model(server, model or (kept if kept in server.models else None))
        meter.confirm(ticket)
    except BaseException:
        meter.release(ticket)
        raise
    return TurnStart(ticket=ticket, setup=setup, server=server, model=chosen)


def conversation_reply(
    *, actor: Actor, conversation: Conversation, content: str, model: str | None = None, meter: Meter | None = None
) -> Iterator[ChatEvent]:
    """Store the user's message, then stream the assistant's turn, storing it as it goes.

    Everything that can be refused (empty or oversized message, unknown model,
    no model server) is refused before anything is stored or streamed. After
    that the user's message is committed first, so it survives whatever the
    model server does. A model server failure ends the turn with an ``error``
    event and an assistant message with status ``error``; a client that goes
    away leaves the partial reply with status ``incomplete``.
    """
    started = time.monotonic()
    content = _check_content(content)
    history = model_history(conversation, limit=settings.CHAT_HISTORY_MESSAGES)
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, *history, {"role": "user", "content": content}]
    return _reply(actor=actor, conversation=conversation, messages=messages, question=content, model=model,
                  meter=meter, started=started)  # fmt: skip


def conversation_retry(
    *,
    actor: Actor,
    conversation: Conversation,
    model: str | None = None,
    meter: Meter | None = None,
    question: int | None = None,
) -> Iterator[ChatEvent]:
    """Answer the last question again: after its turn failed, was stopped or was cut short ("Try again"),
    or for another answer than the one it got ("Regenerate").

    Nothing is stored for the user: the question is already there. The model
    reads the conversation as it stands, without the reply being replaced: a
    failed reply was never part of it, a reply cut short or complete is left
    out, and tool results the turn got are kept, so the model answers from them
    without calling the tools again. The replaced reply stays stored; later
    turns read only the new one (``model_history``). The turn is metered and
    streamed as ``conversation_reply``'s. A conversation without a question is
    refused (409 ``nothing_to_retry``) before anything is charged, as is one whose last
    question is not ``question`` (:func:`_check_question`).
    """
    started = time.monotonic()
    asked = _check_question(conversation, question)
    replaces = reply_to_replace(conversation, limit=settings.CHAT_HISTORY_MESSAGES)
    history = model_history(conversation, limit=settings.CHAT_HISTORY_MESSAGES)
    while history and is_plain_reply(history[-1]):
        history.pop()  # the reply being replaced
    if not any(message["role"] == "user" for message in history):
        raise ApplicationError(
            _("There is no question to answer yet; ask one first."), code="nothing_to_retry", status_code=409
        )
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, *history]
    return _reply(actor=actor, conversation=conversation, messages=messages, question=None, model=model,
                  meter=meter, started=started, replaces=replaces, asked=asked)  # fmt: skip


def conversation_edit(
    *,
    actor: Actor,
    conversation: Conversation,
    content: str,
    model: str | None = None,
    meter: Meter | None = None,
    question: int | None = None,
) -> Iterator[ChatEvent]:
    """Ask the last question again, edited: ``content`` replaces it, and is answered as a new question.

    The edited question stays stored with what answered it (tool calls included),
    and the new question names it in ``replaces``; from then on the model reads
    neither (``model_history``) and the page, the messages API and the download mark
    them as replaced. The turn is checked, metered, stored and streamed as
    ``conversation_reply``'s. A conversation without a question is refused (409
    ``nothing_to_edit``) before anything is charged, as is one whose last question is not
    ``question`` (:func:`_check_question`).
    """
    started = time.monotonic()
    content = _check_content(content)
    edited = _check_question(conversation, question)
    if edited is None:
        raise ApplicationError(
            _("There is no question to edit yet; ask one first."), code="nothing_to_edit", status_code=409
        )
    history = model_history(conversation, limit=settings.CHAT_HISTORY_MESSAGES)
    while history and history.pop()["role"] != "user":
        pass  # the edited question's turn, back to the question itself
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, *history, {"role": "user", "content": content}]
    return _reply(actor=actor, conversation=conversation, messages=messages, question=content, model=model,
                  meter=meter, started=started, question_replaces=edited)  # fmt: skip


def _reply(
    *,
    actor: Actor,
    conversation: Conversation,
    messages: list[dict[str, Any]],
    question: str | None,
    model: str | None,
    meter: Meter | None,
    started: float,
    replaces: int | None = None,
    question_replaces: int | None = None,
    asked: int | None = None,
) -> Iterator[ChatEvent]:
    """Charge the turn, send its first model request, store ``question`` (if new) meanwhile, and stream.

    ``replaces``: the reply a turn answering the question again replaces; its first stored
    assistant message that did not fail names it. ``question_replaces``: the question that
    ``question`` edits. ``asked``: the id of the question a turn answers again."""
    meter = meter or Meter.for_actor(actor)
    meter.claim = turn_hold(meter.schema, conversation)  # taken with the first charge, given up when the turn ends
    ticket: Ticket | None = None
    first: Any = None
    # Until _stream_turn takes them over, whatever fails gives the call back (the model's answer was never
    # read) and the conversation up: neither may wait for a ttl, or for a flush that never comes.
    try:
        start = turn_start(meter=meter, model=model, kept=conversation.model)
        server, chosen, ticket = start.server, start.model, start.ticket
        if start.setup.instructions:  # the workspace's own, after HydroNet's
            messages[0] = {"role": "system", "content": system_prompt(start.setup.instructions)}
        tools = tools_for(actor, start.setup)
        # The model server starts on the request while the user's message is being stored.
        try:
            specs = [tool.openai_spec() for tool in tools]
            first = engine.open_stream(
                server, chosen, messages, specs, deadline=started + settings.CHAT_TURN_MAX_SECONDS
            )
        except engine.UpstreamError as exc:
            meter.release(ticket)
            first = exc
        # A model the request names becomes the conversation's, for its next turns, a reload and "Try again".
        remember = bool(model) and chosen != conversation.model
        conversation.model = chosen if remember else conversation.model
        if question is not None:
            asked = _store_user_message(conversation, question, replaces=question_replaces)
        elif remember:  # answered again: nothing else is stored before the reply
            Conversation.objects.filter(pk=conversation.pk).update(model=chosen)
    except BaseException:
        try:
            if first is not None and not isinstance(first, engine.UpstreamError):
                first.close()
        finally:
            if ticket is not None:
                meter.release(ticket)  # a no-op once given back
            meter.unclaim()
        raise
    return _stream_turn(
        conversation=conversation,
        server=server,
        model=chosen,
        messages=messages,
        tools=tools,
        first=first,
        started=started,
        meter=meter,
        ticket=ticket,
        replaces=replaces,
        question_id=asked,
        recheck=TurnRecheck(actor=actor, meter=meter, model=chosen),
    )


def _check_question(conversation: Conversation, question: int | None) -> int | None:
    """The conversation's last question (None before the first one), which must be ``question`` if one is named.

    A client answers again, or edits, the last question it shows. Another tab or client may have asked a newer one
    since: a "Regenerate" or an edit in a page that had not seen it replaced that question's answer, or the
    question itself, instead of the one the member meant. Naming the question it means, the client is refused
    (409 ``conversation_changed``) before anything is charged or stored.
    """
    last = last_question(conversation, limit=settings.CHAT_HISTORY_MESSAGES)
    if question is not None and last is not None and question != last:
        raise ApplicationError(
            _("A newer question has been asked in this conversation, in another tab or window. Reload the page "
              "to see it, then try again."),
            code="conversation_changed", status_code=409, details={"question": last},
        )  # fmt: skip
    return last


def _store_user_message(conversation: Conversation, content: str, *, replaces: int | None = None) -> int:
    """Store the user's message and touch the conversation (its title, if it has none yet, and its model) in one
    statement.

    One ``INSERT`` and one ``UPDATE`` in a transaction were four round trips
    (``BEGIN``, both statements, ``COMMIT``); as one statement (a data-modifying
    ``WITH``) they are one round trip, and as atomic. The turn's CPU from the
    model's answer to the response went from 2.0 to 0.9 ms (docs/benchmarks.md,
    chat time to first token).
    """
    storage_changed(bytes_written=len(content.encode()))  # a chat's questions add up, as its replies do
    message = Message(conversation=conversation, role=Role.USER, content=content, replaces_id=replaces)
    # The question titles a conversation whose title is empty as stored, not as read when the turn began: a
    # rename made while the model server was starting on the question was overwritten.
    title = one_line(content)[:TITLE_LENGTH]  # one line of text, as a renamed title must be (_valid_title)
    (conversation.title,) = _insert_message(
        message,
        then="SET title = CASE WHEN title = '' THEN %s ELSE title END, model = %s, updated_at = %s",
        params=[title, conversation.model, _touch(conversation)],
        returning="title",
    )
    return int(message.pk)


def _touch(conversation: Conversation) -> Any:
    """Now, as the conversation's ``updated_at`` (set on it, as ``auto_now`` would), ready for the database."""
    updated_at = Conversation._meta.get_field("updated_at")
    return updated_at.get_db_prep_save(updated_at.pre_save(conversation, add=False), connection)


def _insert_message(
    message: Message, *, then: str = "", params: Sequence[Any] = (), returning: str = ""
) -> tuple[Any, ...]:
    """``INSERT`` the message; with ``then`` (an ``UPDATE``'s ``SET`` clause), update its conversation in the
    same statement (a data-modifying ``WITH``): one round trip, and atomic without a transaction.

    The values are prepared by the fields themselves, as ``save()`` would; ``message.pk`` is set. Returns the
    values of ``returning`` (columns of the updated conversation, with ``then``).
    """
    fields = [field for field in Message._meta.concrete_fields if not field.primary_key]
    for field in fields:  # a model or a tool server may send NUL characters, which PostgreSQL cannot store
        value = getattr(message, field.attname)
        if isinstance(value, str | dict | list):
            setattr(message, field.attname, storable(value))
    values = [field.get_db_prep_save(field.pre_save(message, add=True), connection) for field in fields]
    columns = ", ".join(f'"{field.column}"' for field in fields)
    insert = (f"INSERT INTO {Message._meta.db_table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))}) "
              "RETURNING id")  # fmt: skip
    if then:
        sql = (f"WITH m AS ({insert}) UPDATE {Conversation._meta.db_table} {then} WHERE id = %s "
               f"RETURNING (SELECT id FROM m){', ' + returning if returning else ''}")  # fmt: skip
        values += [*params, message.conversation_id]
    else:
        sql = insert
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, values)
            row = cursor.fetchone()
    except IntegrityError as exc:
        if isinstance(exc.__cause__, psycopg.errors.ForeignKeyViolation):  # checked as the statement commits
            raise ConversationGone() from exc
        raise
    if row is None:  # the UPDATE found no conversation
        raise ConversationGone()
    message.pk = row[0]
    message._state.adding = False
    message._state.db = connection.alias
    return tuple(row[1:])


def _stream_turn(
    *,
    conversation: Conversation,
    server: ModelServer,
    model: str,
    messages: list[dict[str, Any]],
    tools: list[engine.BoundTool],
    first: Any,
    started: float,
    meter: Meter,
    ticket: Any,
    replaces: int | None = None,
    question_id: int | None = None,
    recheck: engine.Recheck | None = None,
) -> Iterator[ChatEvent]:
    tokens = 0
    partial: list[str] = []
    running: tuple[engine.ToolCall, float] | None = None  # the tool call under way, and when it began
    reply: Message | None = None
    ending: ChatEvent | None = None  # the error event a failed turn ends with
    turn = engine.run_turn(
        server=server,
        model=model,
        messages=messages,
        tools=tools,
        max_rounds=settings.CHAT_MAX_TOOL_ROUNDS,
        max_calls_per_reply=settings.CHAT_MAX_TOOL_CALLS_PER_REPLY,
        meter=meter,
        first_stream=first,
        first_ticket=ticket,
        deadline=started + settings.CHAT_TURN_MAX_SECONDS,
        recheck=recheck,
    )
    try:
        if isinstance(first, engine.UpstreamError):
            raise first
        for event in turn:
            if isinstance(event, engine.Token):
                partial.append(event.text)
                yield ChatEvent("token", {"text": event.text})
            elif isinstance(event, engine.ModelReply):
                tokens += event.tokens
                partial = []
                if event.tool_calls:
                    _store_assistant(conversation, model, event.said, event.tokens, event.tool_calls,
                                     replaces=replaces)  # fmt: skip
                else:
                    status, why = _answer_status(event)
                    reply = _store_assistant(conversation, model, event.said, event.tokens, [], started=started,
                                             status=status, error=why() if why else "", error_words=why,
                                             replaces=replaces)  # fmt: skip
                replaces = None  # named once, by the turn's first message
            elif isinstance(event, engine.ToolResult):
                running = None
                stored = _store_tool_result(conversation, event)
                yield ChatEvent("tool_result", {**_tool_call_data(event.call), **_tool_result_data(event, stored)})
            elif not isinstance(event, engine.Reasoning):  # the reasoning itself is neither shown nor stored
                running = (event, time.monotonic()) if isinstance(event, engine.ToolCall) else running
                yield _said_event(event)  # a tool call, or the model reasoning: said, nothing stored
    except (engine.UpstreamError, ApplicationError) as exc:  # ApplicationError: a quota ran out between two calls
        turn.close()  # ConversationGone: no further round, there is nowhere to store it (else: it is over)
        ending = _failure_event(conversation, model, "".join(partial), started, exc)
    except GeneratorExit:
        turn.close()  # closes the upstream stream, which cancels the model server's work, or the tool call
        _keep_stopped_call(conversation, running)
        _keep_partial(conversation, model, "".join(partial), started=started, replaces=replaces)
        raise
    finally:
        # Before the last event: a client that reads it may ask its next question at once.
        _turn_over(turn, meter)
    if ending is not None:
        yield _as_done(ending, conversation, question_id)
        return
    assert reply is not None  # run_turn ends with a reply that asks for no tools
    yield ChatEvent(
        "done",
        {
            "message_id": reply.pk,
            "question_id": question_id,
            "conversation_id": conversation.pk,
            "title": conversation.title,
            "tokens": tokens,
            "latency_ms": reply.latency_ms,
            "html": render(reply.content),
            "status": reply.status,
            "error": reply.error,  # why an incomplete reply stopped, where the model server said (its filter)
        },
        reply=reply,
    )


#: Said while a turn waits (``engine.WAITING``): not an event of the API, a comment the response writes.
WAITING = ChatEvent("waiting", {})


def _keep_stopped_call(conversation: Conversation, running: tuple[engine.ToolCall, float] | None) -> None:
    """The client left while a tool ran (``running``: the call, and when it began), which was stopped: its result
    says so, as an error, so that the call stands answered in the conversation, as the page shows it."""
    if running is None:
        return
    call, began = running
    text = _("The tool call was stopped: the reply was stopped before it finished.")
    stopped = engine.ToolResult(call=call, result=text, is_error=True, truncated=False,
                                duration_ms=int((time.monotonic() - began) * 1000))  # fmt: skip
    with suppress(ConversationGone):
        _store_tool_result(conversation, stopped)


def _said_event(event: engine.ToolCall | engine.Thinking | engine.Waiting) -> ChatEvent:
    if event is engine.WAITING:
        return WAITING  # the response writes a comment: a client gone meanwhile is found there
    if isinstance(event, engine.ToolCall):
        return ChatEvent("tool_call", _tool_call_data(event))
    return ChatEvent("thinking", {})


def _answer_status(reply: engine.ModelReply) -> tuple[str, Words | None]:
    """A turn's answer is complete, or ``incomplete`` when the model stopped at its length limit (``max_tokens``
    or the server's own: ``finish_reason: "length"``) or the model server's content filter stopped it
    (``"content_filter"``: Azure's, OpenAI's), as the member is shown, and the model reads it next turn; with the
    words that say why, where they are not the page's own "stopped before it was complete" (kept as ``error``)."""
    if reply.finish_reason == "content_filter":
        return Status.INCOMPLETE, _filtered_words
    return (Status.INCOMPLETE if reply.finish_reason == "length" else Status.COMPLETE), None


def _filtered_words() -> str:
    return _("The model server's content filter stopped this reply.")


def _as_done(ending: ChatEvent, conversation: Conversation, question_id: int | None) -> ChatEvent:
    """A failed turn's error event with the conversation's title and the question's id, as ``done`` has them, when
    the failure was stored (the question titled an untitled conversation all the same)."""
    if "message_id" in ending.data:
        ending.data["title"] = conversation.title
        ending.data["question_id"] = question_id
    return ending


def _turn_over(turn: Generator[Any, None, None], meter: Meter) -> None:
    """The turn's calls are settled and its conversation free for the next turn.

    ``turn`` has ended, or was closed, unless the turn failed in code of its own (storing a
    message): closing it then records the call it has and cancels its stream.
    """
    try:
        turn.close()
    finally:
        meter.unclaim()  # the next turn may begin: everything of this one is stored


def _keep_partial(conversation: Conversation, model: str, text: str, *, started: float, replaces: int | None) -> None:
    """The client left mid-reply: what came of it is kept, marked incomplete."""
    if text:
        with suppress(ConversationGone):  # deleted too: nothing to keep it in
            _store_assistant(conversation, model, text, 0, [], started=started, status=Status.INCOMPLETE,
                             replaces=replaces)  # fmt: skip


def _gone_event(exc: ConversationGone) -> ChatEvent:
    return ChatEvent("error", {"code": exc.code, "message": exc.message, "status": exc.status_code})


def _failure_event(
    conversation: Conversation, model: str, partial: str, started: float, exc: engine.UpstreamError | ApplicationError
) -> ChatEvent:
    """Store what came of a turn that failed, marked as failed, and say so (the conversation gone: only say so)."""
    if isinstance(exc, ConversationGone):
        return _gone_event(exc)
    words = exc.words  # the model server's failure, or a limit reached in a later round
    try:
        failed = _store_assistant(conversation, model, partial, 0, [], started=started, status=Status.ERROR,
                                  error=exc.message, error_words=words)  # fmt: skip
    except ConversationGone as gone:
        return _gone_event(gone)
    # What the reply said before it failed, as done sends a reply: rendered, as the page shows it after a reload.
    said = {"message_id": failed.pk, "html": render(failed.content)}
    if isinstance(exc, engine.UpstreamError):
        return ChatEvent("error", {"code": "upstream_error", "message": exc.message, **said})
    return ChatEvent("error", {"code": exc.code, "message": exc.message, "status": exc.status_code,
                               "details": exc.details, **said})  # fmt: skip


def _store_assistant(
    conversation: Conversation,
    model: str,
    content: str,
    tokens: int,
    tool_calls: list[engine.ToolCall],
    *,
    started: float | None = None,
    status: str = Status.COMPLETE,
    error: str = "",
    error_words: Words | None = None,
    replaces: int | None = None,
) -> Message:
    """Store an assistant message, add its ``tokens`` to the conversation's count and touch it, in one statement.

    ``error_words``: a failed reply's ``error`` to keep in each language, for each reader's.
    ``replaces``: the reply it answers again (not for a failed one: a failed attempt replaces nothing).
    """
    storage_changed(bytes_written=len(content.encode()))
    message = Message(
        conversation=conversation,
        role=Role.ASSISTANT,
        content=content,
        tokens_used=tokens,
        status=status,
        model=model,
        error=error,
        error_translations=in_each_language(error_words) if error_words is not None else None,
        latency_ms=int((time.monotonic() - started) * 1000) if started is not None else None,
        tool_calls=[{"id": c.id, "name": c.name, "arguments": c.raw_arguments} for c in tool_calls],
        replaces_id=None if status == Status.ERROR else replaces,
    )
    # The conversation was active now (the sidebar lists the latest first, a regenerated answer too).
    _insert_message(
        message, then="SET tokens_used = tokens_used + %s, updated_at = %s", params=[tokens, _touch(conversation)]
    )
    return message


def _store_tool_result(conversation: Conversation, result: engine.ToolResult) -> Message:
    storage_changed(bytes_written=len(result.result.encode()))
    message = Message(
        conversation=conversation,
        role=Role.TOOL,
        content=result.result,
        tool_call_id=result.call.id,
        # Cut to the columns: a name the model made up, or a server's own tool name, may be of any length.
        service=result.call.service[: Message.service.field.max_length],
        tool=result.call.tool[: Message.tool.field.max_length],
        arguments=result.call.arguments,
        result_truncated=result.truncated,
        duration_ms=result.duration_ms,
        error=result.result[:2000] if result.is_error else "",
        status=Status.ERROR if result.is_error else Status.COMPLETE,
    )
    _insert_message(message)
    return message


def _tool_call_data(call: engine.ToolCall) -> dict[str, Any]:
    return {"id": call.id, "name": call.name, "service": call.service, "tool": call.tool, "arguments": call.arguments}


def _tool_result_data(result: engine.ToolResult, stored: Message) -> dict[str, Any]:
    return {
        "result": result.result,
        "is_error": result.is_error,
        "duration_ms": result.duration_ms,
        "truncated": result.truncated,
        "message_id": stored.pk,
    }
