"""The OpenAI-compatible API on each tenant host: /v1/models and /v1/chat/completions.

Any OpenAI client works with ``base_url=https://<tenant host>/v1`` and one of the
tenant's API keys. Two modes, chosen by the request:

* with ``tools``: the request goes to the model server as it is, and tool calls
  come back to the client to run (OpenAI's own semantics);
* without ``tools``: HydroNet runs the turn with the tenant's MCP tools, as the
  chat does, and returns the text of every model round.

Nothing is stored as a conversation; the turn is metered like a chat turn.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import Http404
from django.http.response import HttpResponseBase
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.permissions import Perm
from apps.api.base import AUTHENTICATED, JsonSerializer, TenantApi
from apps.api.fields import BoundedListField, JsonBooleanField, JsonFloatField, JsonIntegerField
from apps.chat import engine
from apps.chat.services import TurnRecheck, system_prompt, tools_for, turn_start
from apps.chat.sse import WAITING, sse_response
from apps.core.exceptions import ApplicationError, InvalidInput, add_openai_fields, error_body
from apps.llm.client import ModelServer, model_server
from apps.llm.setup_cache import ai_setup
from apps.mcp.tool_names import MAX_NAME_LENGTH
from apps.tenants.selectors import tenant_current
from apps.usage.meter import Meter

logger = logging.getLogger(__name__)

_ROLES = ("system", "user", "assistant", "tool", "developer")
# Sent to the model server as the client gave them (checked by the InputSerializer), on every
# model round of the turn; tool_choice goes only with the client's own tools (one round).
_PASSED_OPTIONS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "tool_choice",
                   "parallel_tool_calls", "presence_penalty", "frequency_penalty", "response_format",
                   "reasoning_effort")  # fmt: skip
# OpenAI's options that change the answer and that HydroNet does not honour, each with the values that ask for
# nothing (as OpenAI's defaults): any other value is a 400 naming the option, not an answer without what it asked
# for. ``functions`` and ``function_call``: OpenAI's deprecated form of ``tools`` and ``tool_choice``.
_NOT_HONOURED: dict[str, tuple[Any, ...]] = {
    "logprobs": (False,),
    "top_logprobs": (),
    "logit_bias": ({},),
    "audio": (),
    "modalities": (["text"],),
    "prediction": (),
    "service_tier": ("auto", "default"),
    "functions": (),
    "function_call": (),
}
# The InputSerializer's fields that are OpenAI's options (all optional): built only when given.
_OPTION_FIELDS = frozenset(_PASSED_OPTIONS) | frozenset(_NOT_HONOURED) | {"n", "stream_options"}
# Between the texts of two model rounds of one answer (with the workspace's tools: before and after a tool call).
ROUND_SEPARATOR = "\n\n"
_TOOL_CHOICE_MODES = ("none", "auto", "required")
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")
_INT32_MAX = 2**31 - 1
_ONE_CHOICE = gettext_lazy("Only one choice (n = 1) is supported.")


class _OpenAiApi(TenantApi):
    """OpenAI's API: API keys only, and the query is not checked (its clients may add parameters of their own,
    Azure's ``api-version``)."""

    credentials = ("api_key",)
    query = None


class ModelsApi(_OpenAiApi):
    """GET /v1/models."""

    required_permission = AUTHENTICATED

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, description="OpenAI's model list.")
    def get(self, request: Request) -> Response:
        server, created = _listed()
        return Response({"object": "list", "data": [_model(m, created) for m in server.models]})


class ModelDetailApi(_OpenAiApi):
    """GET /v1/models/{model}: one model of the list (openai's ``models.retrieve``); 404 for any other."""

    required_permission = AUTHENTICATED

    @extend_schema(operation_id="v1_model_retrieve", responses={200: OpenApiTypes.OBJECT},
                   description="OpenAI's model object.")  # fmt: skip
    def get(self, request: Request, model: str) -> Response:
        server, created = _listed()
        if model not in server.models:
            raise Http404
        return Response(_model(model, created))


def _listed() -> tuple[ModelServer, int]:
    """The model server whose models /v1 lists, and their ``created`` (Unix seconds), the same on every call:
    when the workspace's own model server was first saved, for its models, else when the workspace was created."""
    provider = ai_setup().provider
    server = model_server(provider)
    since = provider.created_at if server.tenant_supplied and provider is not None else tenant_current().created_at
    return server, int(since.timestamp())


def _model(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "hydronet"}


class MessageSerializer(JsonSerializer):
    role = serializers.ChoiceField(choices=_ROLES)
    content = serializers.JSONField(required=False, allow_null=True)
    # null as if left out (``_clean_message`` drops it), as OpenAI takes it: clients that send a reply back as the
    # SDK's ``model_dump()`` gives it send ``"tool_calls": null``.
    name = serializers.CharField(required=False, allow_null=True, max_length=64)
    tool_calls = BoundedListField(child=serializers.DictField(), required=False, allow_null=True)
    tool_call_id = serializers.CharField(required=False, allow_null=True, max_length=100)

    def validate_content(self, value: Any) -> Any:
        """OpenAI's shapes: a string, or a list of parts each with a ``type`` (a text part with its ``text``).
        Anything else was sent on and charged, for the model server to refuse."""
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and value and all(_valid_part(part) for part in value):
            return value
        raise serializers.ValidationError(
            _('Give the content as a string or a list of parts such as {"type": "text", "text": "..."}.')
        )

    def validate_tool_calls(self, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        """OpenAI's shape for each call, which the model server reads (any other was sent on, charged, and broke
        it: a 502). ``type`` may be left out, as some clients do, and is filled in for servers that require it."""
        if value is None:
            return value
        if not all(_valid_tool_call(call) for call in value):
            raise serializers.ValidationError(
                _(
                    'Give each tool call as {"id": "...", "type": "function", "function": {"name": "...", '
                    '"arguments": "..."}}, the arguments as a string of JSON.'
                )
            )
        return [{**call, "type": "function"} for call in value]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("tool_calls") and attrs["role"] != "assistant":  # as OpenAI: only the model asks for tools
            raise serializers.ValidationError({"tool_calls": [_("Only an assistant's message may have tool_calls.")]})
        if attrs.get("content") is None and not (attrs["role"] == "assistant" and attrs.get("tool_calls")):
            raise serializers.ValidationError({"content": [_("A message needs content (an assistant's may have "
                                                             "tool_calls instead).")]})  # fmt: skip
        return attrs


def _valid_part(part: Any) -> bool:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        return False
    return part["type"] != "text" or isinstance(part.get("text"), str)


def _valid_tool_call(call: dict[str, Any]) -> bool:
    """OpenAI's tool call: ``{"id", "type": "function", "function": {"name", "arguments": str}}``, the id as long as
    the engine keeps one and the name as long as a tool's may be."""
    call_id, function = call.get("id"), call.get("function")
    return (
        isinstance(call_id, str)
        and 0 < len(call_id) <= engine.MAX_TOOL_CALL_ID_CHARS
        and call.get("type") in (None, "function")
        and isinstance(function, dict)
        and isinstance(function.get("name"), str)
        and 0 < len(function["name"]) <= MAX_NAME_LENGTH
        and isinstance(function.get("arguments"), str)
    )


def _valid_tool(tool: dict[str, Any]) -> bool:
    """OpenAI's function tool: ``{"type": "function", "function": {"name", "parameters"?: object}}``."""
    function = tool.get("function")
    return (
        tool.get("type") == "function"
        and isinstance(function, dict)
        and isinstance(function.get("name"), str)
        and 0 < len(function["name"]) <= MAX_NAME_LENGTH
        and isinstance(function.get("parameters", {}), dict)
    )


class StreamOptionsSerializer(serializers.Serializer):
    include_usage = JsonBooleanField(required=False, default=False)


class ResponseFormatSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=RESPONSE_FORMAT_TYPES)
    json_schema = serializers.DictField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["type"] == "json_schema" and not attrs.get("json_schema"):
            raise serializers.ValidationError({"json_schema": [_("This field is required.")]})
        return attrs


class ChatCompletionsApi(_OpenAiApi):
    """POST /v1/chat/completions, streaming (``stream: true``) or not."""

    required_permission = Perm.CREATE_CONVERSATION
    metered = True
    answers_also = ("text/event-stream",)

    class InputSerializer(JsonSerializer):
        """OpenAI's request body. The options are checked against OpenAI's ranges here, so a bad one
        is a 400 from us rather than the model server's refusal as a 502. Fields it does not list
        are ignored, as OpenAI ignores what it does not use (clients send ``user``, ``store``...)."""

        model = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
        messages = MessageSerializer(many=True, allow_empty=False)
        stream = JsonBooleanField(required=False, default=False, allow_null=True)
        stream_options = StreamOptionsSerializer(required=False, allow_null=True)
        tools = BoundedListField(
            child=serializers.DictField(),
            required=False,
            allow_null=True,
            allow_empty=False,
            max_length=128,
            error_messages={"empty": gettext_lazy("Give at least one tool, or leave tools out.")},
        )
        tool_choice = serializers.JSONField(required=False, allow_null=True)
        parallel_tool_calls = JsonBooleanField(required=False, allow_null=True)
        reasoning_effort = serializers.CharField(required=False, allow_null=True, max_length=20)
        n = JsonIntegerField(
            required=False, allow_null=True, min_value=1, max_value=1, error_messages={"max_value": _ONE_CHOICE}
        )
        temperature = JsonFloatField(required=False, allow_null=True, min_value=0, max_value=2)
        top_p = JsonFloatField(required=False, allow_null=True, min_value=0, max_value=1)
        max_tokens = JsonIntegerField(required=False, allow_null=True, min_value=1, max_value=_INT32_MAX)
        max_completion_tokens = JsonIntegerField(required=False, allow_null=True, min_value=1, max_value=_INT32_MAX)
        presence_penalty = JsonFloatField(required=False, allow_null=True, min_value=-2, max_value=2)
        frequency_penalty = JsonFloatField(required=False, allow_null=True, min_value=-2, max_value=2)
        seed = JsonIntegerField(required=False, allow_null=True, min_value=-(2**63), max_value=2**63 - 1)
        stop = serializers.JSONField(required=False, allow_null=True)
        response_format = ResponseFormatSerializer(required=False, allow_null=True)
        logprobs = serializers.JSONField(required=False, allow_null=True)
        top_logprobs = serializers.JSONField(required=False, allow_null=True)
        logit_bias = serializers.JSONField(required=False, allow_null=True)
        audio = serializers.JSONField(required=False, allow_null=True)
        modalities = serializers.JSONField(required=False, allow_null=True)
        prediction = serializers.JSONField(required=False, allow_null=True)
        service_tier = serializers.JSONField(required=False, allow_null=True)
        functions = serializers.JSONField(required=False, allow_null=True)
        function_call = serializers.JSONField(required=False, allow_null=True)

        def get_fields(self) -> dict[str, serializers.Field]:
            """The declared fields, but of the options only those the request has: DRF builds every field
            anew for each request (about 12 µs each), and most requests set one or two of the ten. Without
            data (the OpenAPI schema) all of them."""
            data = getattr(self, "initial_data", None)
            given = data.keys() if isinstance(data, dict) else None
            return {
                name: copy.deepcopy(field)
                for name, field in self._declared_fields.items()
                if given is None or name not in _OPTION_FIELDS or name in given
            }

        def to_internal_value(self, data: Any) -> Any:
            """At most CHAT_MAX_REQUEST_MESSAGES messages, counted before each is checked: 2.5 MB of ``{}`` are
            870,000 messages, which took 34 s of the server's time to refuse one by one."""
            messages = data.get("messages") if isinstance(data, dict) else None
            most = settings.CHAT_MAX_REQUEST_MESSAGES
            if isinstance(messages, list) and len(messages) > most:
                raise serializers.ValidationError(
                    {"messages": [_("Send at most %(most)d messages in one request.") % {"most": most}]}
                )
            return super().to_internal_value(data)

        def validate_stop(self, value: Any) -> Any:
            stops = [value] if isinstance(value, str) else value
            if value is not None and not (
                isinstance(stops, list) and 1 <= len(stops) <= 4 and all(isinstance(s, str) and s for s in stops)
            ):
                raise serializers.ValidationError(_("Give a string or a list of one to four strings."))
            return value

        def validate_tools(self, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
            if value is not None and not all(_valid_tool(tool) for tool in value):
                raise serializers.ValidationError(
                    _('Give each tool as {"type": "function", "function": {"name": ..., "parameters": {...}}}.')
                )
            return value

        def validate_tool_choice(self, value: Any) -> Any:
            if value is None or value in _TOOL_CHOICE_MODES:
                return value
            named = isinstance(value, dict) and value.get("type") == "function"
            function = value.get("function") if named else None
            if not (isinstance(function, dict) and isinstance(function.get("name"), str)):
                raise serializers.ValidationError(
                    _('Give "none", "auto", "required" or {"type": "function", "function": {"name": ...}}.')
                )
            return value

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            for option, asks_nothing in _NOT_HONOURED.items():
                value = attrs.get(option)
                if value is not None and not any(type(value) is type(v) and value == v for v in asks_nothing):
                    raise serializers.ValidationError({option: [_not_honoured(option)]})
            if attrs.get("stream_options") is not None and not attrs.get("stream"):  # as OpenAI
                raise serializers.ValidationError({"stream_options": [_("stream_options goes with stream: true.")]})
            choice, tools = attrs.get("tool_choice"), attrs.get("tools")
            if choice is not None and not tools:  # as OpenAI: only with the request's own tools
                raise serializers.ValidationError({"tool_choice": [_("tool_choice needs tools in the request.")]})
            if attrs.get("parallel_tool_calls") is not None and not tools:  # as OpenAI
                raise serializers.ValidationError(
                    {"parallel_tool_calls": [_("parallel_tool_calls needs tools in the request.")]}
                )
            if isinstance(choice, dict):
                names = {(t.get("function") or {}).get("name") for t in tools or []}
                if choice["function"]["name"] not in names:
                    raise serializers.ValidationError({"tool_choice": [_("No tool of that name is in the request.")]})
            return attrs

    @extend_schema(
        request=InputSerializer,
        # Both media types of the 200: the body's ``stream`` decides, not ``Accept``.
        responses={(200, "application/json"): OpenApiTypes.OBJECT, (200, "text/event-stream"): OpenApiTypes.STR},
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
        deadline = time.monotonic() + settings.CHAT_TURN_MAX_SECONDS
        start = turn_start(meter=meter, model=data.validated_data["model"] or None)
        server, model, ticket = start.server, start.model, start.ticket
        options = {k: data.validated_data[k] for k in _PASSED_OPTIONS if data.validated_data.get(k) is not None}
        client_tools = data.validated_data.get("tools")
        try:  # until the model server has the request, whatever fails gives the call back
            tools = [] if client_tools else tools_for(self.actor(request), start.setup)
            # The client's own instructions replace HydroNet's: "developer" is OpenAI's newer name for "system".
            if not client_tools and not any(m["role"] in ("system", "developer") for m in messages):
                messages.insert(0, {"role": "system", "content": system_prompt(start.setup.instructions)})
            specs = client_tools or [tool.openai_spec() for tool in tools]
            first = engine.open_stream(server, model, messages, specs, deadline=deadline, **options)
        except BaseException as exc:
            meter.release(ticket)
            if isinstance(exc, engine.UpstreamError):
                raise _upstream_error(exc) from exc
            raise
        events: Iterator[Any]
        if client_tools:  # one model call; its tool calls go back to the client to run
            events = engine.metered_round(first, meter, ticket, deadline=deadline)
        else:
            events = engine.run_turn(server=server, model=model, messages=messages, tools=tools, meter=meter,
                                     max_rounds=settings.CHAT_MAX_TOOL_ROUNDS,
                                     max_calls_per_reply=settings.CHAT_MAX_TOOL_CALLS_PER_REPLY,
                                     first_stream=first, first_ticket=ticket, options=options,
                                     deadline=deadline, recheck=TurnRecheck(actor=self.actor(request), meter=meter,
                                     model=model, permission=self.required_permission))  # fmt: skip
        # One id and one time for every chunk of the completion, as OpenAI's.
        completion = _Completion(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model)
        if data.validated_data["stream"]:
            usage = bool((data.validated_data.get("stream_options") or {}).get("include_usage"))
            chunks = _chunks(events, completion, final_only=not client_tools, usage=usage,
                             abandon=lambda: engine.abandon_round(first, meter, ticket))  # fmt: skip
            return sse_response(chunks)
        return Response(_whole(events, completion, final_only=not client_tools, meter=meter))


def _not_honoured(option: str) -> str:
    if option in ("functions", "function_call"):
        return _("OpenAI's deprecated functions are not supported: give tools (and tool_choice) instead.")
    return _("HydroNet does not support %(option)s; leave it out.") % {"option": option}


@dataclass(frozen=True)
class _Completion:
    """What every chunk of one completion says alike."""

    id: str
    created: int
    model: str


# The model server refused the request itself, as OpenAI's would (its context length passed, max_tokens beyond it,
# a message or tool it does not take): the client's request, which a retry would only send again.
REJECTED_REQUEST_STATUSES = frozenset({400, 413, 422})
# openai's clients obey it before the status (their ``_should_retry``).
NO_RETRY = {"x-should-retry": "false"}


def _upstream_error(exc: engine.UpstreamError, *, charged: bool = False) -> ApplicationError:
    """The model server's failure as a /v1 error: 502 ``upstream_error``, or 400 ``upstream_rejected`` where it
    refused the request itself (``REJECTED_REQUEST_STATUSES``), with its words: openai's clients raise
    ``BadRequestError`` for it, as they would for OpenAI's own, and do not retry it.

    ``charged``: the turn recorded calls before it failed. openai's clients retry a 502 (twice, by default),
    and each retry would run the turn, and charge those calls, again: ``x-should-retry: false`` tells
    them not to (their ``_should_retry`` obeys it before the status).
    """
    if exc.status in REJECTED_REQUEST_STATUSES:
        return ApplicationError(exc.message, code="upstream_rejected", status_code=400)
    return ApplicationError(
        exc.message, code="upstream_error", status_code=502, headers=dict(NO_RETRY) if charged else None
    )


def _clean_message(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if v is not None}


def _chunk(completion: _Completion, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": completion.id,
        "object": "chat.completion.chunk",
        "created": completion.created,
        "model": completion.model,
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


# The fields of a delta that the model's text goes in, in _chunks; reasoning_content is DeepSeek's.
_SAID_FIELDS = ("content", "refusal", "reasoning_content")


def _reply_end(reply: engine.ModelReply, completion: _Completion, *, final_only: bool) -> Iterator[bytes]:
    """The chunks that end a model round in _chunks: its tool calls for the client, its finish_reason."""
    if reply.tool_calls and not final_only:
        calls = [{"index": n, **call} for n, call in enumerate(_calls_out(reply))]
        yield _data(_chunk(completion, {"tool_calls": calls}))
    if not reply.tool_calls or not final_only:
        yield _data(_chunk(completion, {}, finish=reply.finish_reason))


def _chunks(
    events: Iterator[Any],
    completion: _Completion,
    *,
    final_only: bool,
    usage: bool,
    abandon: Callable[[], None],
) -> Iterator[bytes]:
    """OpenAI's stream format. In HydroNet-tools mode the answer is the text of every model round (the rounds
    before a tool call are the model saying what it is about to look up), each round's streamed as it comes,
    with ``ROUND_SEPARATOR`` between two that have text: the same answer as without streaming (``_whole``).
    The model's refusal goes as OpenAI's ``refusal`` deltas, a reasoning model's thinking as DeepSeek's
    ``reasoning_content`` deltas, each piece as it comes. As OpenAI's, the stream ends with a chunk that has
    the usage and no choices only when the client asked for it (``stream_options.include_usage``): clients that
    read ``choices[0]`` of every chunk would fail on it.

    A client gone while the model server was being asked is found when the first chunk is
    written, and the server closes the stream there: ``events`` has not started, so its own
    closing (the call recorded, the upstream request cancelled) would never run; ``abandon``
    does that instead.
    """
    prompt = completion_tokens = 0
    try:
        yield _data(_chunk(completion, {"role": "assistant", "content": ""}))
    except GeneratorExit:
        abandon()
        raise
    # Per field (content, refusal, reasoning_content): some streamed in an earlier round; in this one.
    said = dict.fromkeys(_SAID_FIELDS, False)
    said_now = dict.fromkeys(_SAID_FIELDS, False)
    try:
        for event in events:
            if event is engine.WAITING:  # a comment, which openai's clients skip: a client gone is found here
                yield WAITING
                continue
            if isinstance(event, engine.Token) and event.reasoning:  # streamed already, as reasoning_content
                continue
            if isinstance(event, engine.Token):
                field = "refusal" if event.refusal else "content"
            elif isinstance(event, engine.Reasoning):
                field = "reasoning_content"
            else:
                if isinstance(event, engine.ModelReply):
                    prompt += event.prompt_tokens
                    completion_tokens += event.completion_tokens
                    said = {kind: said[kind] or said_now[kind] for kind in said}
                    said_now = dict.fromkeys(_SAID_FIELDS, False)
                    yield from _reply_end(event, completion, final_only=final_only)
                continue
            text = ROUND_SEPARATOR + event.text if said[field] and not said_now[field] else event.text
            said_now[field] = True
            yield _data(_chunk(completion, {field: text}))
    except (engine.UpstreamError, ApplicationError) as exc:  # the model server failed; a quota ran out mid-turn
        failed = exc if isinstance(exc, ApplicationError) else _upstream_error(exc)
        error = error_body(failed.code, failed.message, failed.details)  # as a /v1 error before the stream began
        add_openai_fields(error["error"], failed.status_code)
        yield _data(error)
        yield _data("[DONE]")
        return
    if usage:
        yield _data({**_chunk(completion, {}), "choices": [], "usage": _usage(prompt, completion_tokens)})
    yield _data("[DONE]")


def _content(reply: engine.ModelReply) -> str:
    """A round's answer for /v1: none where the model said only its reasoning, which ``reasoning_content`` has (the
    chat shows it as the answer; /v1 gave it twice, as both, until 2026-12-08)."""
    return "" if reply.content_is_reasoning else reply.content


def _whole(events: Iterator[Any], completion: _Completion, *, final_only: bool, meter: Meter) -> dict[str, Any]:
    """The turn's answer as one chat.completion. An error after the turn recorded a call (a round, a tool call)
    says ``x-should-retry: false``, whatever it is: openai's clients retry a 5xx, and the retry would run the
    turn, and charge those calls, again."""
    prompt = completion_tokens = 0
    replies: list[engine.ModelReply] = []
    try:
        for event in events:
            if isinstance(event, engine.ModelReply):
                prompt, completion_tokens = prompt + event.prompt_tokens, completion_tokens + event.completion_tokens
                replies.append(event)
    except engine.UpstreamError as exc:  # a failed round is given back: charged only by those before it
        raise _upstream_error(exc, charged=meter.recorded > 0) from exc
    except ApplicationError as exc:  # a quota that ran out between two calls, metering_unavailable
        if meter.recorded:
            exc.headers = {**exc.headers, **NO_RETRY}
        raise
    except Exception as exc:
        if not meter.recorded:
            raise
        logger.exception("a /v1 turn failed after its calls were recorded")  # Django's 500 would log it so
        raise ApplicationError(_("Something went wrong on our side. It has been logged."), code="server_error",
                               status_code=500, headers=dict(NO_RETRY)) from exc  # fmt: skip
    last = replies[-1]
    # Every round's text, as the stream gives it (_chunks); a refusal as OpenAI gives it, null when there is none;
    # a reasoning model's thinking as DeepSeek's API gives it, only when it reasoned (OpenAI's message has no such
    # field).
    message: dict[str, Any] = {
        "role": "assistant",
        "content": ROUND_SEPARATOR.join(_content(reply) for reply in replies if _content(reply)) or None,
        "refusal": ROUND_SEPARATOR.join(reply.refusal for reply in replies if reply.refusal) or None,
    }
    if reasoning := ROUND_SEPARATOR.join(reply.reasoning for reply in replies if reply.reasoning):
        message["reasoning_content"] = reasoning
    if last.tool_calls and not final_only:
        message["tool_calls"] = _calls_out(last)
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": completion.created,
        "model": completion.model,
        "choices": [{"index": 0, "message": message, "finish_reason": last.finish_reason}],
        "usage": _usage(prompt, completion_tokens),
    }
