from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django import forms
from django.http import QueryDict
from django.utils.translation import gettext_lazy as _

from apps.core.exceptions import InvalidInput, put_on_form
from apps.core.kept_secrets import data_with_reference
from apps.mcp.models import Transport
from apps.mcp.services import headers_repeated, mcp_service_fields_check


class SecretTextarea(forms.Textarea):
    """A text box that, as a password box, never shows a value back: auth headers typed into a form with errors
    are kept in the session instead (apps.core.kept_secrets)."""

    def format_value(self, value: Any) -> str | None:
        return None


class McpServiceForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=100)
    url = forms.CharField(label=_("URL"), max_length=500, help_text=_("For example https://mcp.example.com/mcp"))
    type = forms.ChoiceField(label=_("Transport"), choices=Transport.choices, initial=Transport.STREAMABLE_HTTP)
    timeout_seconds = forms.IntegerField(label=_("Timeout (seconds)"), min_value=1, max_value=120, initial=30)
    headers = forms.CharField(
        label=_("Auth headers"),
        required=False,
        widget=SecretTextarea(attrs={"rows": 2, "placeholder": "Authorization: Bearer ..."}),
        help_text=_("One “Name: value” per line. Stored encrypted and never shown again."),
    )
    # The reference to the headers typed into a submission that came back with errors (apps.core.kept_secrets).
    kept_secret = forms.CharField(required=False, widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:  # else the service checks them all as it saves
            # The fields the form accepted, checked as the service would: a bad URL is named with a bad timeout,
            # not on the next submit.
            try:
                mcp_service_fields_check(
                    name=cleaned.get("name"), url=cleaned.get("url"), type=cleaned.get("type"),
                    timeout_seconds=cleaned.get("timeout_seconds"), headers=cleaned.get("headers"),
                )  # fmt: skip
            except InvalidInput as exc:
                put_on_form(self, exc)
        return cleaned

    def keep_secret(self, reference: str) -> None:
        """After errors: the page carries the reference to the headers kept in the session, and says they are kept."""
        self.data = data_with_reference(self.data, reference)
        self.fields["headers"].help_text = self["headers"].help_text = _(
            "The headers you typed are kept for this form but not shown: leave this empty to save them, or type others."
        )

    def clean_headers(self) -> dict[str, str]:
        """The lines as a dict; a name given twice is refused, as the service refuses two in different cases (the
        dict would keep the last one, silently)."""
        pairs: list[tuple[str, str]] = []
        for line in (self.cleaned_data.get("headers") or "").splitlines():
            if not line.strip():
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise forms.ValidationError(_("Write each header as “Name: value”."))
            pairs.append((name.strip(), value.strip()))
        if problem := headers_repeated(name for name, _value in pairs):
            raise forms.ValidationError(problem)
        return dict(pairs)


class McpServiceEditForm(McpServiceForm):
    """The same fields; the stored headers cannot be shown, so empty keeps them and a box removes them.

    ``shown_tools`` (hidden) names the tools the page showed boxes for: a tool loaded since (a test in another tab)
    keeps its state, offered or not, instead of counting as unchecked, and one no longer listed is left out.
    """

    clear_headers = forms.BooleanField(label=_("Remove the stored auth headers"), required=False)

    offered_tools = forms.MultipleChoiceField(
        label=_("Tools offered to the model"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("Unchecked tools are kept from the model. Tools the server adds later are offered."),
    )
    shown_tools = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(
        self, *args: Any, tool_names: list[str] | None = None, disabled_tools: Iterable[str] = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["headers"].help_text = _("Leave empty to keep the stored headers; new ones replace them all.")
        self.tool_names = tool_names or []
        self.initial.setdefault("shown_tools", json.dumps(self.tool_names))
        if self.is_bound:
            self.data = self._unseen_kept(set(disabled_tools))
        if self.tool_names:
            field = self.fields["offered_tools"]
            assert isinstance(field, forms.MultipleChoiceField)
            field.choices = [(name, name) for name in self.tool_names]
        else:
            del self.fields["offered_tools"]

    def _unseen_kept(self, disabled: set[str]) -> Any:
        """The posted data with the boxes of tools the page did not show as the tools stand (offered unless kept
        from the model), without the boxes of shown tools the server no longer lists, and the tools shown now.
        Posted without ``shown_tools`` (or with one that is not a list of names), as it came."""
        try:
            shown = json.loads(self.data.get("shown_tools", "null"))
        except (TypeError, ValueError):
            shown = None
        if (
            not isinstance(self.data, QueryDict)
            or not isinstance(shown, list)
            or not all(isinstance(name, str) for name in shown)
        ):
            return self.data
        data, shown, listed = self.data.copy(), set(shown), set(self.tool_names)
        ticked = [name for name in data.getlist("offered_tools") if name in listed or name not in shown]
        unseen = [name for name in self.tool_names if name not in shown and name not in disabled]
        data.setlist("offered_tools", [*ticked, *unseen])
        data["shown_tools"] = json.dumps(self.tool_names)
        return data

    def disabled_tools(self) -> list[str] | None:
        """The loaded tools left unchecked; None when no tools are loaded (nothing to choose)."""
        if not self.tool_names:
            return None
        offered = set(self.cleaned_data.get("offered_tools") or ())
        return [name for name in self.tool_names if name not in offered]
