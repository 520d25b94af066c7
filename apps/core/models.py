from typing import Any

from django.db import models


class TimeStampedModel(models.Model):
    """Base model: every row knows when it was created and last changed."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


def storable(value: Any) -> Any:
    """``value`` (text, or JSON of dicts and lists) with each NUL character, which PostgreSQL refuses in text
    and jsonb, replaced by U+FFFD, the character that stands for one that could not be kept.

    For what other servers send that we store: a model's reply, a tool's result, an MCP server's tool list.
    """
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
    return value
