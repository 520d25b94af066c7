from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from apps.plans.selectors import plan_list_public
from apps.tenants.slugs import SLUG_MAX_LENGTH, SLUG_MIN_LENGTH


class SignupForm(forms.Form):
    """The shape of a sign-up; apps.tenants.services decides whether it is allowed."""

    name = forms.CharField(label=_("Organisation name"), max_length=100)
    slug = forms.CharField(
        label=_("Workspace address"),
        min_length=SLUG_MIN_LENGTH,
        max_length=SLUG_MAX_LENGTH,
        help_text=_("Lower-case letters, digits and hyphens."),
    )
    admin_email = forms.EmailField(label=_("Your work email"))
    admin_password = forms.CharField(label=_("Password"), widget=forms.PasswordInput, strip=False)
    plan = forms.ChoiceField(label=_("Plan"))

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        plan_field = self.fields["plan"]
        assert isinstance(plan_field, forms.ChoiceField)
        plan_field.choices = [(p.code, p.display_name) for p in plan_list_public().filter(self_serve=True)]
        self.fields["plan"].initial = "free"
