"""Server-Sent Events over WSGI: each event is written and flushed as soon as it exists."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.http import StreamingHttpResponse

#: What a stream says while its turn waits (apps.chat.waits): an SSE comment, which every reader ignores (the chat
#: page's, openai's clients', EventSource); written, it shows whether the client is still there.
WAITING = b": waiting\n\n"


def encode(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def sse_response(events: Iterator[bytes]) -> StreamingHttpResponse:
    """A text/event-stream response that nothing between us and the client should buffer.

    Closing the response (the WSGI server does when the client goes away)
    closes ``events``, so the producer can cancel its upstream work.
    """

    def body() -> Iterator[bytes]:
        try:
            yield from events
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

    response = StreamingHttpResponse(body(), content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache, no-transform"
    response["X-Accel-Buffering"] = "no"  # nginx
    return response
