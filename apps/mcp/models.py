from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from apps.core.languages import in_reader_language
from apps.mcp.tool_names import ExposedTool, exposed_tools


class Transport(models.TextChoices):
    STREAMABLE_HTTP = "streamable-http", _("Streamable HTTP")
    SSE = "sse", _("SSE (legacy)")


class McpService(models.Model):
    """One of the tenant's MCP tool servers. The design notes' fields: name, url, type, config, is_active.

    ``config`` holds what is not secret (``timeout_seconds``, ``disabled_tools``); auth headers are
    encrypted in ``secret_headers`` and never returned. ``tools`` caches the
    server's tool list from the last successful connection test.
    """

    name = models.CharField(_("name"), max_length=100)
    # Prefix of this service's tools as the model sees them: "<slug>__<tool>".
    slug = models.SlugField(_("tool prefix"), max_length=30, unique=True)
    url = models.URLField(_("URL"), max_length=500)
    type = models.CharField(_("transport"), max_length=20, choices=Transport.choices, default=Transport.STREAMABLE_HTTP)
    config = models.JSONField(_("configuration"), default=dict, blank=True)
    secret_headers = models.TextField(blank=True)
    is_active = models.BooleanField(_("enabled"), default=True)
    tools = models.JSONField(_("tools"), default=list, blank=True)
    tools_refreshed_at = models.DateTimeField(_("tools refreshed at"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    # ``last_error`` in each of settings.LANGUAGES, {code: text} (apps.core.languages); NULL where it was stored
    # before these were kept, or is empty.
    last_error_translations = models.JSONField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name", "id")
        verbose_name = _("MCP service")
        verbose_name_plural = _("MCP services")

    def __str__(self) -> str:
        return self.name

    @property
    def timeout_seconds(self) -> int:
        return int(self.config.get("timeout_seconds") or settings.MCP_DEFAULT_TIMEOUT_SECONDS)

    @property
    def disabled_tools(self) -> list[str]:
        """Tools of this server the admins keep from the model, by name (``config["disabled_tools"]``)."""
        return list(self.config.get("disabled_tools") or [])

    @property
    def exposed_tools(self) -> list[ExposedTool]:
        """The loaded tools, each once, with the names the model calls them by (apps.mcp.tool_names)."""
        return exposed_tools(self.slug, self.tools)

    @property
    def offered_tools(self) -> list[ExposedTool]:
        """The loaded tools the model is offered: those not disabled."""
        disabled = set(self.disabled_tools)
        return [tool for tool in self.exposed_tools if tool.name not in disabled]

    @property
    def last_error_text(self) -> str:
        """``last_error`` in the reader's language (the active one), where it was stored in each."""
        return in_reader_language(self.last_error_translations, self.last_error)

    @property
    def has_secret_headers(self) -> bool:
        return bool(self.secret_headers)

    @property
    def url_origin(self) -> str:
        """The URL's scheme, host and port, as members who use the service but do not manage it see it: many MCP
        providers put the key in the URL's path or query (``/s/<key>/mcp``, ``?api_key=``), or in its user
        part, where auth headers, encrypted, are never shown."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
