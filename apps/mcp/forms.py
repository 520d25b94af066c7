from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from apps.core.exceptions import InvalidInput, put_on_form
from apps.mcp.models import Transport
from apps.mcp.services import headers_repeated, mcp_service_fields_check


class McpServiceForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=100)
    url = forms.CharField(label=_("URL"), max_length=500, help_text=_("For example https://mcp.example.com/mcp"))
    type = forms.ChoiceField(label=_("Transport"), choices=Transport.choices, initial=Transport.STREAMABLE_HTTP)
    timeout_seconds = forms.IntegerField(label=_("Timeout (seconds)"), min_value=1, max_value=120, initial=30)
    headers = forms.CharField(
        label=_("Auth headers"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "Authorization: Bearer ..."}),
        help_text=_("One “Name: value” per line. Stored encrypted and never shown again."),
    )

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
    """The same fields; the stored headers cannot be shown, so empty keeps them and a box removes them."""

    clear_headers = forms.BooleanField(label=_("Remove the stored auth headers"), required=False)

    offered_tools = forms.MultipleChoiceField(
        label=_("Tools offered to the model"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("Unchecked tools are kept from the model. Tools the server adds later are offered."),
    )

    def __init__(self, *args: Any, tool_names: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["headers"].help_text = _("Leave empty to keep the stored headers; new ones replace them all.")
        self.tool_names = tool_names or []
        if self.tool_names:
            field = self.fields["offered_tools"]
            assert isinstance(field, forms.MultipleChoiceField)
            field.choices = [(name, name) for name in self.tool_names]
        else:
            del self.fields["offered_tools"]

    def disabled_tools(self) -> list[str] | None:
        """The loaded tools left unchecked; None when no tools are loaded (nothing to choose)."""
        if not self.tool_names:
            return None
        offered = set(self.cleaned_data.get("offered_tools") or ())
        return [name for name in self.tool_names if name not in offered]
