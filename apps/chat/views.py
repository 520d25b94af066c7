from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext_lazy as _

from apps.accounts.decorators import permission_required
from apps.accounts.permissions import Perm, role_has
from apps.chat.markdown import render as render_markdown
from apps.chat.models import Status
from apps.chat.selectors import (
    TurnState,
    access_conversation,
    conversation_list,
    latest_messages,
    replaced_replies,
    turn_state,
    turn_under_way,
)
from apps.chat.services import tools_for
from apps.core.actors import request_actor
from apps.core.exceptions import ApplicationError
from apps.llm.client import model_server

# The sidebar lists the most recent conversations; a search (titles and what was said) finds the older ones.
SIDEBAR_CONVERSATIONS = 100
SEARCH_MAX_CHARS = 200
# A long conversation opens at its latest messages: each assistant message is Markdown rendered and
# cleaned on every view (1,000 messages took 0.6 s). "Show earlier messages" shows this many more each
# time (``?show=``), up to SHOWN_MESSAGES_MAX: "Show all" of 3,000 messages with tool results was 62 MB of
# HTML and 2.3 s; the download has the whole conversation.
PAGE_MESSAGES = 200
SHOWN_MESSAGES_MAX = 1000
# A new chat offers these to ask with one click; the demo workspace's hydrology tools answer each.
SUGGESTIONS = (
    _("What are the latest water levels at station S001?"),
    _("How much rain fell at station S002 over the past week?"),
    _("What are the flood warning levels at station S003?"),
)


@permission_required(Perm.VIEW_OWN_CONVERSATIONS)
def chat_view(request: HttpRequest, conversation_id: int | None = None) -> HttpResponse:
    """The chat page: one's conversations on the left, the open one on the right."""
    actor = request_actor(request)
    conversation = access_conversation(actor, conversation_id) if conversation_id is not None else None
    # Not "messages": that is the messages framework's, which base.html shows as notices.
    shown: list[dict[str, Any]] = []
    earlier = 0  # messages before the ones shown
    kept: dict[str, Any] | None = None  # the last shown message that did not fail
    # A page left while its reply streamed asks for this one before the server has stored what came of it:
    # waited for, briefly; a turn still under way after that is said to be, not offered to try again.
    writing = conversation is not None and turn_under_way(conversation)
    if conversation is not None:
        listed, earlier = latest_messages(conversation, limit=_shown_messages(request))
        replaced = replaced_replies(listed)  # the page shows the conversation to its end: nothing follows
        # Of those, the replies a retry replaced; the others answered a question that was edited since.
        answered_again = {m.replaces_id for m in listed if m.replaces_id is not None}
        for message in listed:
            html = render_markdown(message.content) if message.role == "assistant" else ""
            item = {"message": message, "html": html, "replaced": message.pk in replaced,
                    "answered_again": message.pk in answered_again}  # fmt: skip
            if message.role == "tool":  # as static/js/chat.js shows them while the turn streams: keys sorted,
                # not in jsonb's order (shorter keys first), which is neither the model's nor the page's
                item["arguments"] = json.dumps(message.arguments, indent=2, ensure_ascii=False, sort_keys=True)
            if message.status != Status.ERROR:
                kept = item
            shown.append(item)
    try:
        server = model_server()
        models, model_error, own_server = list(server.models), "", server.tenant_supplied
    except ApplicationError as exc:
        models, model_error, own_server = [], exc.message, False
    # NUL dropped as conversation_list drops it: a search of NULs alone lists every conversation
    search = request.GET.get("q", "").replace("\x00", "").strip()[:SEARCH_MAX_CHARS]
    can_see_all = role_has(getattr(request.user, "role", ""), Perm.ALL_CONVERSATIONS)
    everyone = can_see_all and request.GET.get("all") == "1"  # the sidebar lists everyone's, read-only
    found = conversation_list(actor=actor, search=search, everyone=everyone)
    conversations = list(found[: SIDEBAR_CONVERSATIONS + 1])
    for listed_one in conversations:  # found by what was said, not by the title: show where
        by_title = not search or search.lower() in listed_one.title.lower()
        listed_one.match_parts = None if by_title else _match_parts(listed_one.match, search)  # type: ignore[attr-defined]
    read_only = conversation is not None and conversation.user_id != request.user.pk
    writable = not read_only and role_has(getattr(request.user, "role", ""), Perm.CREATE_CONVERSATION)
    # The last question can be answered again: "Try again" after a failed or cut-short turn, else "Regenerate".
    turn = TurnState.WRITING if writing else None
    if conversation is not None and writable and not model_error and not writing:
        turn = turn_state(conversation, last=kept["message"] if kept else None)
    # What the sidebar's links keep, into the conversation they open: everyone's, and the search that found it.
    sidebar_query = urlencode({**({"all": "1"} if everyone else {}), **({"q": search} if search else {})})
    context = {
        "conversations": conversations[:SIDEBAR_CONVERSATIONS],
        "more_conversations": len(conversations) > SIDEBAR_CONVERSATIONS,
        "sidebar_count": SIDEBAR_CONVERSATIONS,
        "search": search,
        "can_see_all": can_see_all,
        "everyone": everyone,
        "sidebar_query": sidebar_query,
        "conversation": conversation,
        "chat_messages": shown,
        "earlier_messages": earlier,
        # "Show earlier messages": as many again, while the page may show more.
        "show_more": len(shown) + PAGE_MESSAGES if earlier and len(shown) < SHOWN_MESSAGES_MAX else None,
        "read_only": read_only,
        "writable": writable,
        "suggestions": SUGGESTIONS,
        "turn": turn,
        "models": models,
        "model_error": model_error,
        # A new chat says who answers and with how many tools: a new workspace has none until an admin connects one.
        "own_model_server": own_server,
        "tools_offered": len(tools_for(actor)) if writable and not shown else 0,
        "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
    }
    return render(request, "chat/chat.html", context)


def _shown_messages(request: HttpRequest) -> int:
    """How many of the latest messages the page shows: ``?show=`` (from "Show earlier messages"), within
    PAGE_MESSAGES and SHOWN_MESSAGES_MAX; anything else shows PAGE_MESSAGES."""
    asked = request.GET.get("show", "")
    if not (asked.isascii() and asked.isdigit()):
        return PAGE_MESSAGES
    return SHOWN_MESSAGES_MAX if len(asked) > 7 else min(max(int(asked), PAGE_MESSAGES), SHOWN_MESSAGES_MAX)


def _match_parts(window: str, search: str) -> tuple[str, str, str] | None:
    """The window of a message a search found, split around the match (to be marked); escaped by the template."""
    if not window:
        return None
    at = window.lower().find(search.lower())
    if at < 0:  # PostgreSQL's case folding found it where Python's does not: show it unmarked
        return window, "", ""
    return window[:at], window[at : at + len(search)], window[at + len(search) :]
