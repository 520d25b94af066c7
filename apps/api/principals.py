from __future__ import annotations

from apps.accounts.models import ApiKey


class ApiKeyPrincipal:
    """``request.user`` for a request authenticated by an API key: it acts with the key's role."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    pk = None
    id = None

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key
        self.role = api_key.role

    @property
    def email(self) -> str:
        return f"api-key:{self.api_key.prefix}"

    def __str__(self) -> str:
        return self.email
