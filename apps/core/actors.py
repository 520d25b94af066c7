"""Who did something: the actor every write service receives and every audit event records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest

if TYPE_CHECKING:
    from apps.accounts.models import ApiKey, User


@dataclass(frozen=True)
class Actor:
    """A member or staff user, an API key, or a label such as "signup", "cli" or "system"."""

    user: User | None = None
    api_key: ApiKey | None = None
    label: str = "system"
    ip: str | None = None
    user_agent: str = ""

    @property
    def display(self) -> str:
        if self.user is not None:
            return self.user.email
        if self.api_key is not None:
            return f"api-key:{self.api_key.prefix}"
        return self.label

    def for_user(self, user: User) -> Actor:
        """The same request, acted by ``user`` (for example once a login succeeded)."""
        return Actor(user=user, label=self.label, ip=self.ip, user_agent=self.user_agent)


SYSTEM = Actor(label="system")


def client_ip(request: HttpRequest) -> str | None:
    """The client address, as the rate limits see it (RATELIMIT_IP_META_KEY behind a proxy)."""
    from django.conf import settings

    key = getattr(settings, "RATELIMIT_IP_META_KEY", None) or "REMOTE_ADDR"
    value = request.META.get(key) or request.META.get("REMOTE_ADDR")
    return value.split(",")[0].strip() if value else None


def request_actor(request: HttpRequest | Any, *, label: str = "anonymous") -> Actor:
    """The actor behind a request: its member, its API key, or ``label`` when anonymous."""
    from apps.accounts.models import User

    user = getattr(request, "user", None)
    api_key = getattr(user, "api_key", None)
    return Actor(
        user=user if isinstance(user, User) and user.is_authenticated else None,
        api_key=api_key,
        label=label,
        ip=client_ip(request),
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:512],
    )
