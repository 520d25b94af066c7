from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from apps.mcp.models import Transport


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

    def clean_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for line in (self.cleaned_data.get("headers") or "").splitlines():
            if not line.strip():
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise forms.ValidationError(_("Write each header as “Name: value”."))
            headers[name.strip()] = value.strip()
        return headers
