"""Messages shown where the admin is looking, not at the top of the page: the result of "Test connection",
"Enable" or "Disable" inside the card of the button that asked for it.

A placed message is a Django message whose extra tag names the element (its id) it belongs in; the redirect goes to
that element's anchor. The view takes the page's messages apart with ``messages_by_place`` and gives the template
the rest as ``messages`` (the context processor's are then not shown again).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib import messages
from django.contrib.messages.storage.base import Message
from django.http import HttpRequest

PREFIX = "place:"


def message_at(request: HttpRequest, level: int, text: str, *, place: str) -> None:
    """A message for the page's element ``place`` (its id), shown inside it."""
    messages.add_message(request, level, text, extra_tags=f"{PREFIX}{place}")


def messages_by_place(request: HttpRequest, places: Iterable[str]) -> tuple[list[Message], dict[str, list[Message]]]:
    """The request's messages: those for the page's top (including any for a place the page does not have now: a
    service removed meanwhile, say), and those for each of ``places``. Read, they are not shown again."""
    wanted = set(places)
    top: list[Message] = []
    placed: dict[str, list[Message]] = {place: [] for place in wanted}
    for message in messages.get_messages(request):
        place = (message.extra_tags or "").removeprefix(PREFIX) if (message.extra_tags or "").startswith(PREFIX) else ""
        if place in wanted:
            placed[place].append(message)
        else:
            message.extra_tags = "" if place else message.extra_tags
            top.append(message)
    return top, placed
