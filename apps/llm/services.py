"""Writes to the tenant's own model provider (the key encrypted, the URL through the SSRF guard) and to the
assistant's instructions."""

from __future__ import annotations

import re

from django.db import transaction
from django.utils.translation import gettext as _

from apps.audit.services import audit_record
from apps.core.actors import Actor
from apps.core.crypto import encrypt
from apps.core.exceptions import InvalidInput, fields_refused
from apps.core.outbound import check_url_to_store, same_origin
from apps.core.text import has_control_characters
from apps.llm.models import AssistantSettings, ModelProvider
from apps.llm.setup_cache import ai_setup_forget

_KEEP = object()
# Sent in the Authorization header, which the HTTP client encodes as ASCII: any other key failed every chat.
_API_KEY_RE = re.compile(r"[\x20-\x7e]*")


@transaction.atomic
def model_provider_save(
    *,
    actor: Actor,
    base_url: str,
    model_ids: list[str],
    name: str = "",
    api_key: str | None = None,
    is_active: bool = True,
) -> ModelProvider:
    """Create or replace the tenant's provider. ``api_key=None`` keeps the stored key; "" removes it.

    A base URL on another origin (scheme, host, port) than the stored one takes the key anew or removes it:
    whoever may manage the provider never sees the stored key, and must not have it sent to a server of their
    choosing by moving the URL and pressing "test".
    """
    errors: dict[str, list[str]] = {}
    url_refused: InvalidInput | None = None
    try:
        base_url = check_url_to_store(base_url.strip(), field="base_url")
    except InvalidInput as exc:  # UnsafeURL too
        url_refused = exc
        errors.update(exc.details)
    model_ids = [m.strip() for m in model_ids if m and m.strip()]
    model_ids = list(dict.fromkeys(model_ids))  # a name listed twice is offered once
    too_long = [m for m in model_ids if len(m) > 100]
    if too_long:
        errors["model_ids"] = [_("A model name may be at most 100 characters: %(name)s…") % {"name": too_long[0][:40]}]
    elif not model_ids or len(model_ids) > 50:
        errors["model_ids"] = [_("List 1 to 50 model names; the first is the default.")]
    elif any(has_control_characters(m) for m in model_ids):  # the settings page lists them one a line
        errors["model_ids"] = [_("A model name cannot hold control characters.")]
    elif any("," in m for m in model_ids):  # the settings page takes commas between names, as new lines
        errors["model_ids"] = [_("A model name cannot hold a comma: the settings page separates names with commas.")]
    name = name.strip()[:100]
    if has_control_characters(name):  # as MCP services' and conversations' names
        errors["name"] = [_("A name cannot hold control characters.")]
    if api_key is not None:
        api_key = api_key.strip()
        if not _API_KEY_RE.fullmatch(api_key):
            errors["api_key"] = [_("An API key is one line of printable ASCII characters.")]
    if errors:
        raise fields_refused(errors, alone=url_refused)  # the URL alone: its own message (unsafe_url: docs/api.md)
    provider = _provider_locked(base_url=base_url, model_ids=model_ids)
    if api_key is None and provider.has_api_key and not same_origin(provider.base_url, base_url):
        message = _(
            "The base URL points to another server now: enter the API key again, or remove it. "
            "The stored key is not sent to another server."
        )
        raise InvalidInput(message, details={"api_key": [message]})
    provider.name = name
    provider.base_url = base_url
    provider.model_ids = model_ids
    provider.is_active = is_active
    if api_key is not None:
        provider.api_key_encrypted = encrypt(api_key)
    provider.save()
    ai_setup_forget()
    audit_record(
        actor=actor,
        action="model_provider.saved",
        target=provider,
        metadata={"base_url": base_url, "models": provider.model_ids, "key_changed": api_key is not None},
    )
    return provider


def _provider_locked(**defaults: object) -> ModelProvider:
    """The one row (pk 1), locked until commit; created first if there is none.

    get_or_create settles two first saves racing each other (a savepoint and a re-read); the loop, a delete
    committed between it and the lock (the lock found no row: a 500 DoesNotExist before).
    """
    while True:
        ModelProvider.objects.get_or_create(pk=1, defaults=defaults)
        provider = ModelProvider.objects.select_for_update().filter(pk=1).first()
        if provider is not None:
            return provider


@transaction.atomic
def model_provider_delete(*, actor: Actor) -> None:
    """Go back to the platform's model server. Of two deletes at once, the second finds no row (it waits
    on the first's lock) and records nothing."""
    provider = ModelProvider.objects.select_for_update().filter(pk=1).first()
    if provider is not None:
        audit_record(actor=actor, action="model_provider.deleted", target=provider)
        provider.delete()
        ai_setup_forget()


MAX_INSTRUCTIONS_CHARS = 4000


@transaction.atomic
def assistant_instructions_set(*, actor: Actor, instructions: str) -> AssistantSettings:
    """Set the admins' instructions to the model for every chat turn; "" removes them.

    The next turn reads them (the AI setup cache is dropped). At most 4,000
    characters: they are sent with every model call, and paid for as tokens.
    """
    instructions = (instructions or "").strip()
    if len(instructions) > MAX_INSTRUCTIONS_CHARS:
        message = _("Use at most %(max)d characters.") % {"max": MAX_INSTRUCTIONS_CHARS}
        raise InvalidInput(message, details={"instructions": [message]})
    # The one row is pk 1: get_or_create settles two first saves racing each other (a savepoint and a re-read).
    AssistantSettings.objects.get_or_create(pk=1)
    settings_row = AssistantSettings.objects.select_for_update().get(pk=1)
    if settings_row.instructions == instructions:
        return settings_row
    settings_row.instructions = instructions
    settings_row.save()
    ai_setup_forget()
    audit_record(actor=actor, action="assistant.instructions_set", target=settings_row,
                 metadata={"chars": len(instructions)})  # fmt: skip
    return settings_row
