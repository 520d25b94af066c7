"""Writes to users. Views, APIs, tasks and commands all come through here."""

from __future__ import annotations

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from apps.accounts.models import Role, User
from apps.core.exceptions import InvalidInput


def normalize_email(email: str) -> str:
    """Emails are compared and stored lower-cased, without surrounding spaces."""
    return (email or "").strip().lower()


def validate_new_password(*, password: str, email: str, full_name: str = "", field: str = "password") -> None:
    """Apply Django's password validators; raise InvalidInput naming ``field``."""
    try:
        validate_password(password, user=User(email=email, full_name=full_name))
    except ValidationError as exc:
        raise InvalidInput(_("Choose a stronger password."), details={field: list(exc.messages)}) from exc


@transaction.atomic
def user_create(
    *,
    email: str,
    password: str | None,
    role: Role = Role.USER,
    full_name: str = "",
    is_staff: bool = False,
    is_superuser: bool = False,
    email_field: str = "email",
    password_field: str = "password",  # noqa: S107 (names a form field)
) -> User:
    """Create a user in the current schema.

    With ``password=None`` the account gets an unusable password, to be set
    through an invitation or a reset. ``*_field`` name the input fields that
    errors are reported against.
    """
    email = normalize_email(email)
    try:
        validate_email(email)
    except ValidationError as exc:
        raise InvalidInput(_("Enter a valid email address."), details={email_field: list(exc.messages)}) from exc
    if User.objects.filter(email=email).exists():
        raise InvalidInput(
            _("A user with this email address already exists."),
            details={email_field: [_("A user with this email address already exists.")]},
        )
    if password is not None:
        validate_new_password(password=password, email=email, full_name=full_name, field=password_field)
    user = User(
        email=email,
        full_name=full_name.strip(),
        role=role,
        is_staff=is_staff,
        is_superuser=is_superuser,
    )
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError as exc:  # a concurrent create of the same email
        raise InvalidInput(
            _("A user with this email address already exists."),
            details={email_field: [_("A user with this email address already exists.")]},
        ) from exc
    return user
