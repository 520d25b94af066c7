from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from apps.core.languages import in_reader_language


class Conversation(models.Model):
    """A member's conversation with the assistant. The design notes' fields: title, created_at."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(_("title"), max_length=200, blank=True)
    model = models.CharField(_("model"), max_length=100, blank=True)
    tokens_used = models.PositiveBigIntegerField(_("tokens used"), default=0)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True, db_index=True)

    class Meta:
        ordering = ("-updated_at", "-id")
        verbose_name = _("conversation")
        verbose_name_plural = _("conversations")
        indexes = [models.Index(fields=["user", "-updated_at"], name="chat_conv_user_updated_idx")]

    def __str__(self) -> str:
        return self.title or f"#{self.pk}"


class Role(models.TextChoices):
    USER = "user", _("User")
    ASSISTANT = "assistant", _("Assistant")
    SYSTEM = "system", _("System")
    TOOL = "tool", _("Tool")


class Status(models.TextChoices):
    COMPLETE = "complete", _("Complete")
    INCOMPLETE = "incomplete", _("Incomplete")
    ERROR = "error", _("Error")


class Message(models.Model):
    """One message. The design notes' fields: role, content, tokens_used, created_at.

    An assistant message that asked for tools carries ``tool_calls``; each call's
    outcome is a ``tool`` message with the service, tool, arguments, result
    (truncated when large), duration and error. An assistant reply cut short by
    a disconnect, the model's length limit or the model server's content filter
    (saying so in ``error``) is stored with status ``incomplete``; one that failed
    upstream with status ``error``.
    """

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(_("role"), max_length=16, choices=Role.choices)
    content = models.TextField(_("content"), blank=True)
    tokens_used = models.PositiveIntegerField(_("tokens used"), default=0)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.COMPLETE)
    model = models.CharField(_("model"), max_length=100, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    # Assistant messages: [{"id", "name", "arguments"}] the model asked for.
    tool_calls = models.JSONField(default=list, blank=True)
    # Tool messages.
    tool_call_id = models.CharField(max_length=100, blank=True)
    service = models.CharField(_("service"), max_length=100, blank=True)
    tool = models.CharField(_("tool"), max_length=200, blank=True)
    arguments = models.JSONField(null=True, blank=True)
    result_truncated = models.BooleanField(default=False)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    # A failed reply's error (or why an incomplete one stopped: the model server's content filter) in each of
    # settings.LANGUAGES, {code: text}, as it was stored (apps.core.languages); NULL for other messages and those
    # stored before, which show ``error``, the text in the storing request's language. NULL, not {}: a turn that
    # does not fail prepares nothing more for its INSERT.
    error_translations = models.JSONField(null=True, blank=True)
    # The first assistant message of a turn that answered the last question again ("Try again",
    # "Regenerate") names the reply it replaces; an edited question names the question it replaces
    # (and so the turn that answered it: selectors._replaced). What is replaced stays stored, and the
    # model no longer reads it. Said explicitly, so two turns that ran at once in one conversation are
    # not taken for a reply and its replacement.
    replaces = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, db_index=False,
                                 related_name="+")  # fmt: skip
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        ordering = ("created_at", "id")
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        indexes = [
            models.Index(fields=["conversation", "id"], name="chat_msg_conv_id_idx"),
            # Only the few messages that replace one: which replies were replaced, by id.
            models.Index(fields=["replaces"], condition=models.Q(replaces__isnull=False), name="chat_msg_replaces_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"

    @property
    def error_text(self) -> str:
        """``error`` in the reader's language (the active one), where it was stored in each."""
        return in_reader_language(self.error_translations, self.error)
