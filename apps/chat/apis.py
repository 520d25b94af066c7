"""The chat API: conversations, and posting a message for a streamed or whole reply."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.permissions import Perm, role_has
from apps.accounts.services import actor_role
from apps.api.base import AUTHENTICATED, PageOnlyQuery, PageQuery, StrictQuery, StrictSerializer, TenantApi
from apps.api.fields import JsonBooleanField, JsonIntegerField
from apps.api.permissions import PermissionMissing
from apps.api.schema import error_response, quota_exceeded
from apps.chat import services
from apps.chat.markdown import render
from apps.chat.models import Conversation, Message
from apps.chat.selectors import (
    access_conversation,
    conversation_list,
    conversation_markdown,
    latest_messages,
    message_list,
    replaced_among,
    replaced_replies,
)
from apps.chat.sse import WAITING, encode, sse_response
from apps.core.actors import Actor
from apps.core.exceptions import ApplicationError
from apps.llm.client import model_server


class ConversationOutput(serializers.ModelSerializer):
    owner = serializers.EmailField(source="user.email")

    class Meta:
        model = Conversation
        fields: tuple[str, ...] = ("id", "title", "model", "owner", "tokens_used", "created_at", "updated_at")
        read_only_fields: tuple[str, ...] = fields


class ConversationListOutput(ConversationOutput):
    """A conversation in a list; with ``?search=``, ``match``: the words around it in the latest question or
    answer that has it, with "…" where the message goes on ("" when none has it: the title matched)."""

    match = serializers.CharField(read_only=True, default="")

    class Meta(ConversationOutput.Meta):
        fields = (*ConversationOutput.Meta.fields, "match")
        read_only_fields = fields


class MessageOutput(serializers.ModelSerializer):
    """A message; ``replaced``: a reply answered again since ("Try again", "Regenerate"), which the model no
    longer reads. The context's ``replaced`` holds their ids (``selectors.replaced_replies``)."""

    html = serializers.SerializerMethodField()
    replaced = serializers.SerializerMethodField()
    error = serializers.CharField(
        source="error_text",
        help_text=(
            "A failed reply's error, or why an incomplete one stopped where the model server said (its content "
            "filter), in the request's language."
        ),
    )

    class Meta:
        model = Message
        fields = (
            "id", "role", "content", "html", "status", "replaced", "replaces", "tokens_used", "model", "latency_ms",
            "tool_calls", "tool_call_id", "service", "tool", "arguments", "result_truncated", "duration_ms", "error",
            "created_at",
        )  # fmt: skip
        read_only_fields = fields

    def get_html(self, message: Message) -> str:
        return render(message.content) if message.role == "assistant" else ""

    def get_replaced(self, message: Message) -> bool:
        return message.pk in self.context.get("replaced", ())


def _replaced_on_page(conversation: Conversation) -> Callable[[list[Message]], dict[str, Any]]:
    """The serializer context of a page of messages: which no longer stand (answered again, or a question
    edited and what answered it), also when what replaced them is on a later page."""
    return lambda page: {"replaced": replaced_among(conversation, [m.pk for m in page])}


class ConversationListApi(TenantApi):
    """GET /api/conversations: one's own, the most recently active first; ``?all=true`` is everyone's."""

    required_permission = Perm.VIEW_OWN_CONVERSATIONS

    class FilterSerializer(StrictQuery, PageQuery):
        search = serializers.CharField(required=False, allow_blank=True, max_length=200)
        all = serializers.BooleanField(required=False, default=False)

    query = FilterSerializer

    @extend_schema(parameters=[FilterSerializer], responses={200: ConversationListOutput(many=True)})
    def get(self, request: Request) -> Response:
        self.member(request)
        filters = self.query_data
        if filters["all"] and not role_has(actor_role(self.actor(request)) or "", Perm.ALL_CONVERSATIONS):
            raise PermissionMissing(Perm.ALL_CONVERSATIONS)  # said, not quietly answered with one's own
        conversations = conversation_list(
            actor=self.actor(request),
            search=filters.get("search", ""),
            everyone=filters["all"],
        )
        return self.paginate(request, conversations, ConversationListOutput)


class ConversationCreateApi(TenantApi):
    """POST /api/conversations."""

    required_permission = Perm.CREATE_CONVERSATION

    class InputSerializer(StrictSerializer):
        title = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
        model = serializers.CharField(required=False, allow_blank=True, max_length=100, default="")

    @extend_schema(request=InputSerializer, responses={201: ConversationOutput, 402: quota_exceeded("storage")})
    def post(self, request: Request) -> Response:
        self.member(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        conversation = services.conversation_create(
            actor=self.actor(request), title=data.validated_data["title"], model=data.validated_data["model"] or None
        )
        return Response(ConversationOutput(conversation).data, status=status.HTTP_201_CREATED)


# GET /api/conversations/{id} brings the latest messages along; the earlier ones are paged by .../messages.
DETAIL_MESSAGES = 200


class ConversationDetailApi(TenantApi):
    """GET /api/conversations/{id}: the conversation with its latest messages (at most ``DETAIL_MESSAGES``,
    oldest first); ``earlier_messages`` says how many come before them (``GET .../messages`` pages them all)."""

    required_permission = Perm.VIEW_OWN_CONVERSATIONS

    class OutputSerializer(ConversationOutput):
        messages = serializers.SerializerMethodField()
        earlier_messages = serializers.SerializerMethodField(
            help_text=f"How many messages come before the {DETAIL_MESSAGES} latest that `messages` holds."
        )

        class Meta(ConversationOutput.Meta):
            fields = (*ConversationOutput.Meta.fields, "messages", "earlier_messages")
            read_only_fields = fields

        @extend_schema_field(MessageOutput(many=True))
        def get_messages(self, conversation: Conversation) -> list[dict[str, Any]]:
            messages, _earlier = self.context["latest"]
            return list(MessageOutput(messages, many=True, context={"replaced": replaced_replies(messages)}).data)

        def get_earlier_messages(self, conversation: Conversation) -> int:
            return int(self.context["latest"][1])

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request, conversation_id: int) -> Response:
        self.member(request)
        conversation = access_conversation(self.actor(request), conversation_id)
        latest = latest_messages(conversation, limit=DETAIL_MESSAGES)
        return Response(self.OutputSerializer(conversation, context={"latest": latest}).data)


class ConversationExportApi(TenantApi):
    """GET /api/conversations/{id}/export: the whole conversation as a Markdown file to download.

    Who may read the conversation may export it: one's own, and everyone's with ``all_conversations``.
    """

    required_permission = Perm.VIEW_OWN_CONVERSATIONS
    answers_also = ("text/markdown",)

    @extend_schema(responses={(200, "text/markdown"): OpenApiResponse(response=OpenApiTypes.STR)})
    def get(self, request: Request, conversation_id: int) -> HttpResponse:
        self.member(request)
        conversation = access_conversation(self.actor(request), conversation_id)
        response = HttpResponse(conversation_markdown(conversation), content_type="text/markdown; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="conversation-{conversation.pk}.md"'
        return response


class ConversationRenameApi(TenantApi):
    """PATCH /api/conversations/{id}: ``{title}``."""

    required_permission = Perm.CREATE_CONVERSATION

    class InputSerializer(StrictSerializer):
        title = serializers.CharField(max_length=200, allow_blank=True)

    @extend_schema(request=InputSerializer, responses={200: ConversationOutput})
    def patch(self, request: Request, conversation_id: int) -> Response:
        self.member(request)
        actor = self.actor(request)
        conversation = access_conversation(actor, conversation_id, write=True)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        conversation = services.conversation_rename(actor=actor, conversation=conversation, **data.validated_data)
        return Response(ConversationOutput(conversation).data)


class ConversationDeleteApi(TenantApi):
    """DELETE /api/conversations/{id}."""

    required_permission = Perm.CREATE_CONVERSATION

    @extend_schema(responses={204: None})
    def delete(self, request: Request, conversation_id: int) -> Response:
        self.member(request)
        actor = self.actor(request)
        services.conversation_delete(actor=actor, conversation=access_conversation(actor, conversation_id, write=True))
        return Response(status=status.HTTP_204_NO_CONTENT)


class MessageListApi(TenantApi):
    """GET /api/conversations/{id}/messages: paginated, oldest first."""

    required_permission = Perm.VIEW_OWN_CONVERSATIONS
    query = PageOnlyQuery

    @extend_schema(responses={200: MessageOutput(many=True)})
    def get(self, request: Request, conversation_id: int) -> Response:
        self.member(request)
        conversation = access_conversation(self.actor(request), conversation_id)
        return self.paginate(
            request, message_list(conversation), MessageOutput, context=_replaced_on_page(conversation)
        )


# The component keeps the name it had before retry shared it: generated clients' types stay as they were.
@extend_schema_serializer(component_name="MessagePostOutput")
class ReplyOutput(serializers.Serializer):
    conversation_id = serializers.IntegerField()
    message = MessageOutput()
    tool_calls = serializers.ListField(child=serializers.DictField())
    tokens = serializers.IntegerField()
    latency_ms = serializers.IntegerField()


BUSY = "`conversation_busy`: another turn is answering in this conversation (one at a time)"
REPLY_RESPONSES = {
    (200, "application/json"): ReplyOutput,
    409: error_response(f"{BUSY}."),
    (200, "text/event-stream"): OpenApiResponse(
        response=OpenApiTypes.STR,
        description="With `stream: true`: Server-Sent Events `token`, `tool_call`, `tool_result`, then "
        "`done` or `error`.",
    ),
}


def _whole(conversation: Conversation, events: Iterator[services.ChatEvent]) -> Response:
    """A turn's events as one JSON answer; a failed turn as the error it ended with."""
    tool_calls: list[dict[str, Any]] = []
    for event in events:  # "waiting" ones too: nothing is written before the answer, so they go unsaid
        if event.type == "tool_result":
            tool_calls.append(event.data)
        elif event.type == "error":
            details = dict(event.data.get("details", {}))
            if "message_id" in event.data:  # the failed reply, stored; none when the conversation is gone
                details["message_id"] = event.data["message_id"]
            raise ApplicationError(event.data["message"], code=event.data["code"],
                                   status_code=event.data.get("status", 502), details=details)  # fmt: skip
        elif event.type == "done":
            body = {  # the reply as it was stored, not read again: its conversation may be deleted by now
                "conversation_id": conversation.pk,
                "message": event.reply,
                "tool_calls": tool_calls,
                "tokens": event.data["tokens"],
                "latency_ms": event.data["latency_ms"],
            }
            return Response(ReplyOutput(body).data)
    raise AssertionError("a chat turn ends with done or error")


def _respond(conversation: Conversation, events: Iterator[services.ChatEvent], stream: bool) -> HttpResponseBase:
    if stream:
        return sse_response(WAITING if event is services.WAITING else encode(event.type, event.data)
                            for event in events)  # fmt: skip
    return _whole(conversation, events)


class _TurnApi(TenantApi):
    """What the two operations that run a chat turn share: their options, and the conversation they answer in."""

    required_permission = Perm.CREATE_CONVERSATION
    metered = True
    answers_also = ("text/event-stream",)

    class InputSerializer(StrictSerializer):
        stream = JsonBooleanField(required=False, default=False)
        model = serializers.CharField(required=False, allow_blank=True, max_length=100, default="")

    def turn_conversation(self, request: Request, conversation_id: int) -> tuple[Actor, Conversation]:
        """The member's own conversation, with the history the turn sends the model (404 for anyone else's)."""
        self.member(request)
        actor = self.actor(request)
        conversation = access_conversation(
            actor, conversation_id, write=True, with_history=settings.CHAT_HISTORY_MESSAGES
        )
        return actor, conversation


def _question_field() -> JsonIntegerField:
    """The question a turn that answers again or edits means: the last one the client shows."""
    return JsonIntegerField(required=False, allow_null=True, default=None, min_value=1)


CHANGED = "`conversation_changed`: `question` is not the conversation's last question (another tab or client asked one)"


class MessagePostApi(_TurnApi):
    """POST /api/conversations/{id}/messages: the user's message, and the assistant's reply.

    With ``stream: true`` the reply is Server-Sent Events: ``token`` (``text``),
    ``tool_call``, ``tool_result``, then ``done`` (``message_id``, ``tokens``,
    ``latency_ms``, ``html``) or ``error`` (``code``, ``message``, and ``message_id`` and ``html`` of the failed
    reply when it was stored). Without it,
    one JSON answer, or 502 ``upstream_error`` when the model server fails; the
    user's message is stored either way.
    """

    class InputSerializer(_TurnApi.InputSerializer):
        content = serializers.CharField(allow_blank=True, trim_whitespace=False)

    #: What answers the question: a new one here, the last one changed in MessageEditApi.
    answer = staticmethod(services.conversation_reply)

    @extend_schema(request=InputSerializer, responses=REPLY_RESPONSES)
    def post(self, request: Request, conversation_id: int) -> HttpResponseBase:
        actor, conversation = self.turn_conversation(request, conversation_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        # The question an edit means, if the client names it (MessageEditApi)
        meant = {"question": data.validated_data["question"]} if "question" in data.validated_data else {}
        events = self.answer(
            actor=actor,
            conversation=conversation,
            content=data.validated_data["content"],
            model=data.validated_data["model"] or None,
            meter=self.meter,
            **meant,
        )
        return _respond(conversation, events, data.validated_data["stream"])


class MessageRetryApi(_TurnApi):
    """POST /api/conversations/{id}/retry: answer the last question again: "Try again" after its turn failed,
    was stopped or was cut short, "Regenerate" after a complete answer.

    Nothing new is stored for the user. The reply streams (``stream: true``) or
    comes whole, as ``POST .../messages``' does, and is metered the same way.
    409 ``nothing_to_retry`` when there is no question yet; ``question``, if given, must be
    the last question (409 ``conversation_changed``).
    """

    class InputSerializer(_TurnApi.InputSerializer):
        question = _question_field()

    @extend_schema(
        request=InputSerializer,
        responses={
            **REPLY_RESPONSES,
            409: error_response(f"{BUSY}; `nothing_to_retry`: the conversation has no question yet; {CHANGED}."),
        },
    )
    def post(self, request: Request, conversation_id: int) -> HttpResponseBase:
        actor, conversation = self.turn_conversation(request, conversation_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        events = services.conversation_retry(
            actor=actor, conversation=conversation, model=data.validated_data["model"] or None, meter=self.meter,
            question=data.validated_data["question"],
        )  # fmt: skip
        return _respond(conversation, events, data.validated_data["stream"])


class MessageEditApi(MessagePostApi):
    """POST /api/conversations/{id}/edit: ask the last question again, changed: ``content`` replaces it.

    The edited question and what answered it stay stored, marked ``replaced``; the model
    reads the conversation without them. The new question is answered as ``POST .../messages``
    answers one: streamed or whole, metered the same way. 409 ``nothing_to_edit`` when there
    is no question yet; ``question``, if given, must be the last question (409 ``conversation_changed``).
    """

    class InputSerializer(MessagePostApi.InputSerializer):
        question = _question_field()

    answer = staticmethod(services.conversation_edit)

    @extend_schema(
        request=InputSerializer,
        responses={
            **REPLY_RESPONSES,
            409: error_response(f"{BUSY}; `nothing_to_edit`: the conversation has no question yet; {CHANGED}."),
        },
    )
    def post(self, request: Request, conversation_id: int) -> HttpResponseBase:
        return super().post(request, conversation_id)


class ModelListApi(TenantApi):
    """GET /api/models: the models members of this workspace may choose; the first is the default."""

    required_permission = AUTHENTICATED

    class OutputSerializer(serializers.Serializer):
        models = serializers.ListField(child=serializers.CharField())
        default = serializers.CharField()

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request) -> Response:
        server = model_server()
        return Response({"models": list(server.models), "default": server.default_model})
