from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from apps.core.kept_secrets import data_with_reference


class ModelProviderForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=100, required=False)
    base_url = forms.CharField(
        label=_("Base URL"),
        max_length=500,
        help_text=_("An OpenAI-compatible API, for example https://api.example.com/v1"),
    )
    model_ids = forms.CharField(
        label=_("Models"),
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("One model name per line; the first is the default."),
    )
    api_key = forms.CharField(
        label=_("API key"),
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text=_("Stored encrypted and never shown again."),
    )
    # Shown while a key is stored: the way to a server that needs none, since an empty key field keeps the key.
    clear_api_key = forms.BooleanField(label=_("Remove the stored API key"), required=False)
    is_active = forms.BooleanField(label=_("Use it for this workspace"), required=False, initial=True)
    # The reference to the key typed into a submission that came back with errors (apps.core.kept_secrets).
    kept_secret = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, key_stored: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if key_stored:
            self.fields["api_key"].help_text = _(
                "Stored encrypted and never shown again. Leave empty to keep the stored key."
            )

    def keep_secret(self, reference: str) -> None:
        """After errors: the page carries the reference to the key kept in the session, and says the key is kept."""
        self.data = data_with_reference(self.data, reference)
        self.fields["api_key"].help_text = self["api_key"].help_text = _(
            "The key you typed is kept for this form but not shown: leave this empty to save it, or type another."
        )

    def clean_model_ids(self) -> list[str]:
        return [line.strip() for line in self.cleaned_data["model_ids"].replace(",", "\n").splitlines() if line.strip()]


class AssistantInstructionsForm(forms.Form):
    instructions = forms.CharField(
        label=_("Instructions to the assistant"),
        required=False,
        max_length=4000,
        widget=forms.Textarea(
            attrs={
                "rows": 6,
                "placeholder": _("For example: our stations are named after their rivers; answer formally."),
            }
        ),
        help_text=_("Sent to the model with every chat turn, after HydroNet's own. At most 4,000 characters."),
    )
