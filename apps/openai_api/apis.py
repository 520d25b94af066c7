"""The OpenAI-compatible API on each tenant host: /v1/models and /v1/chat/completions.

Any OpenAI client works with ``base_url=https://<tenant host>/v1`` and one of the
tenant's API keys. Two modes, chosen by the request:

* with ``tools``: the request goes to the model server as it is, and tool calls
  come back to the client to run (OpenAI's own semantics);
* without ``tools``: HydroNet runs the turn with the tenant's MCP tools, as the
  chat does, and returns the final answer.

Nothing is stored as a conversation; the turn is metered like a chat turn.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http.response import HttpResponseBase
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.permissions import Perm
from apps.api.base import AUTHENTICATED, TenantApi
from apps.chat import engine
from apps.chat.services import SYSTEM_PROMPT, tools_for, turn_start
from apps.chat.sse import sse_response
from apps.core.exceptions import ApplicationError, InvalidInput
from apps.llm.client import model_server
from apps.usage.meter import Meter

_ROLES = ("system", "user", "assistant", "tool", "developer")
_PASSED_OPTIONS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "tool_choice",
                   "presence_penalty", "frequency_penalty", "response_format")  # fmt: skip


class ModelsApi(TenantApi):
    """GET /v1/models."""

    required_permission = AUTHENTICATED
    credentials = ("api_key",)

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, description="OpenAI's model list.")
    def get(self, request: Request) -> Response:
        created = int(time.time())
        data = [{"id": m, "object": "model", "created": created, "owned_by": "hydronet"} for m in model_server().models]
        return Response({"object": "list", "data": data})


class MessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=_ROLES)
    content = serializers.JSONField(required=False, allow_null=True)
    name = serializers.CharField(required=False, max_length=64)
    tool_calls = serializers.ListField(child=serializers.DictField(), required=False)
    tool_call_id = serializers.CharField(required=False, max_length=100)


class ChatCompletionsApi(TenantApi):
    """POST /v1/chat/completions, streaming (``stream: true``) or not."""

    required_permission = Perm.CREATE_CONVERSATION
    credentials = ("api_key",)
    metered = True

    class InputSerializer(serializers.Serializer):
        model = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
        messages = MessageSerializer(many=True, allow_empty=False)
        stream = serializers.BooleanField(required=False, default=False)
        tools = serializers.ListField(child=serializers.DictField(), required=False, max_length=128)

    @extend_schema(
        request=InputSerializer,
        responses={200: OpenApiTypes.OBJECT},
        description="OpenAI's chat.completion, or chat.completion.chunk events with stream: true.",
    )
    def post(self, request: Request) -> HttpResponseBase:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        messages = [_clean_message(m) for m in data.validated_data["messages"]]
        total = sum(len(str(m.get("content") or "")) for m in messages)
        if total > settings.CHAT_MAX_MESSAGE_CHARS * 10:
            message = _("The messages are too long.")
            raise InvalidInput(message, code="message_too_long", details={"messages": [message]})
        meter = self.meter or Meter.for_actor(self.actor(request))
        start = turn_start(meter=meter, model=data.validated_data["model"] or None)
        server, model, ticket = start.server, start.model, start.ticket
        options = {k: request.data[k] for k in _PASSED_OPTIONS if isinstance(request.data, dict) and k in request.data}
        client_tools = data.validated_data.get("tools")
        tools = [] if client_tools else tools_for(self.actor(request), start.setup)
        if not client_tools and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": SYSTEM_PROMPT})
        specs = client_tools or [tool.openai_spec() for tool in tools]
        try:
            first = engine.open_stream(server, model, messages, specs, **options)
        except engine.UpstreamError as exc:
            meter.release(ticket)
            raise ApplicationError(exc.message, code="upstream_error", status_code=502) from exc
        events: Iterator[Any]
        if client_tools:  # one model call; its tool calls go back to the client to run
            events = engine.metered_round(first, meter, ticket)
        else:
            events = engine.run_turn(server=server, model=model, messages=messages, tools=tools, meter=meter,
                                     max_rounds=settings.CHAT_MAX_TOOL_ROUNDS, first_stream=first,
                                     first_ticket=ticket)  # fmt: skip
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if data.validated_data["stream"]:
            return sse_response(_chunks(events, completion_id, model, final_only=not client_tools))
        return Response(_whole(events, completion_id, model, final_only=not client_tools))


def _clean_message(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if v is not None}


def _chunk(completion_id: str, model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _data(payload: dict[str, Any] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def _calls_out(reply: engine.ModelReply) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.raw_arguments}}
        for c in reply.tool_calls
    ]


def _chunks(events: Iterator[Any], completion_id: str, model: str, *, final_only: bool) -> Iterator[bytes]:
    """OpenAI's stream format. In HydroNet-tools mode only the last round's text is the answer,
    but every round's tokens are streamed as they come: the rounds before it are the model
    saying what it is about to look up."""
    prompt = completion = 0
    yield _data(_chunk(completion_id, model, {"role": "assistant", "content": ""}))
    try:
        for event in events:
            if isinstance(event, engine.Token):
                yield _data(_chunk(completion_id, model, {"content": event.text}))
            elif isinstance(event, engine.ModelReply):
                prompt, completion = prompt + event.prompt_tokens, completion + event.completion_tokens
                if event.tool_calls and not final_only:
                    calls = [{"index": n, **call} for n, call in enumerate(_calls_out(event))]
                    yield _data(_chunk(completion_id, model, {"tool_calls": calls}))
                if not event.tool_calls or not final_only:
                    yield _data(_chunk(completion_id, model, {}, finish=event.finish_reason))
    except engine.UpstreamError as exc:
        yield _data({"error": {"code": "upstream_error", "message": exc.message, "type": "upstream_error"}})
        yield _data("[DONE]")
        return
    except ApplicationError as exc:  # a quota ran out between two calls of the turn
        yield _data({"error": {"code": exc.code, "message": exc.message, "type": exc.code, "details": exc.details}})
        yield _data("[DONE]")
        return
    yield _data({**_chunk(completion_id, model, {}), "choices": [], "usage": _usage(prompt, completion)})
    yield _data("[DONE]")


def _whole(events: Iterator[Any], completion_id: str, model: str, *, final_only: bool) -> dict[str, Any]:
    prompt = completion = 0
    last: engine.ModelReply | None = None
    try:
        for event in events:
            if isinstance(event, engine.ModelReply):
                prompt, completion = prompt + event.prompt_tokens, completion + event.completion_tokens
                last = event
    except engine.UpstreamError as exc:
        raise ApplicationError(exc.message, code="upstream_error", status_code=502) from exc
    assert last is not None
    message: dict[str, Any] = {"role": "assistant", "content": last.content or None}
    if last.tool_calls and not final_only:
        message["tool_calls"] = _calls_out(last)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": last.finish_reason}],
        "usage": _usage(prompt, completion),
    }
