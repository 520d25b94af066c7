from __future__ import annotations

from apps.accounts.models import User


def user_count_active() -> int:
    """Active users in the current schema."""
    return User.objects.filter(is_active=True).count()
