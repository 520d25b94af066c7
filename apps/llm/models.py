from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class ModelProvider(models.Model):
    """A tenant's own OpenAI-compatible model server ("bring your own key").

    At most one per tenant: the row is pk 1, which a check constraint holds to, so two
    first saves racing each other cannot leave two. While it is active, the tenant's chats use it instead
    of the platform's default model server. The API key is stored encrypted
    (apps.core.crypto) and never returned by the API.
    """

    name = models.CharField(_("name"), max_length=100, default="")
    base_url = models.URLField(_("base URL"), max_length=500)
    api_key_encrypted = models.TextField(blank=True)
    # Model ids members may choose; the first is the default.
    model_ids = models.JSONField(_("models"), default=list)
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("model provider")
        verbose_name_plural = _("model providers")
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="llm_model_provider_one_row")]

    def __str__(self) -> str:
        return self.name or self.base_url

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key_encrypted)


class AssistantSettings(models.Model):
    """How the workspace's assistant behaves, beyond HydroNet's own prompt: one row per tenant, pk 1.

    ``instructions`` are the admins' words to the model wherever HydroNet's own
    prompt goes (chat turns, and ``/v1`` requests without a system message or
    tools of their own): the utility's context, station naming, tone, language.
    """

    instructions = models.TextField(_("instructions"), blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("assistant settings")
        verbose_name_plural = _("assistant settings")

    def __str__(self) -> str:
        return str(_("assistant settings"))
