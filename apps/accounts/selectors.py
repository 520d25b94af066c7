"""Reads of identity, and the access helpers that look rows up by id on behalf of an actor."""

from __future__ import annotations

from functools import cache

from django.db import connection
from django.db.models import Model, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from apps.accounts.models import ApiKey, Invitation, User
from apps.accounts.permissions import Perm, role_has
from apps.accounts.services import actor_role
from apps.core.actors import Actor


# Every request with a JWT reads its user before anything else, and every request with an API
# key its key, so those reads are statements written once per process: the ORM spent about
# 0.6 ms building ``User.objects.get(id=...)``, against 0.15 ms to run it, and
# ``ApiKey.objects.filter(prefix=...).first()`` cost 1.2 ms of CPU, against 0.4 ms for the
# statement (docs/benchmarks.md).
# As with the conversation statement (apps.chat.selectors), columns go to ``from_db`` as psycopg
# returns them: no field of either model has a value converter on PostgreSQL (tests compare
# each with the ORM's row).
@cache
def _select_by(model: type[Model], field_name: str) -> tuple[str, tuple[str, ...]]:
    fields = model._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(str(field.column)) for field in fields)
    table = connection.ops.quote_name(model._meta.db_table)
    column = connection.ops.quote_name(str(model._meta.get_field(field_name).column))  # type: ignore[union-attr]
    return f"SELECT {columns} FROM {table} WHERE {column} = %s", tuple(field.attname for field in fields)


def _row_by[M: Model](model: type[M], field_name: str, value: int | str) -> M | None:
    """The row of ``model`` in the current schema whose unique ``field_name`` is ``value``."""
    sql, attnames = _select_by(model, field_name)
    with connection.cursor() as cursor:
        cursor.execute(sql, [value])
        row = cursor.fetchone()
    return None if row is None else model.from_db(connection.alias, attnames, row)


def user_by_id(pk: int) -> User | None:
    """The user with id ``pk`` in the current schema, active or not; None if there is none."""
    return _row_by(User, "id", pk)


def api_key_by_prefix(prefix: str) -> ApiKey | None:
    """The API key whose lookup prefix is ``prefix`` in the current schema, usable or not."""
    return _row_by(ApiKey, "prefix", prefix)


def user_count_active() -> int:
    """Active users in the current schema."""
    return User.objects.filter(is_active=True).count()


def user_count_for_quota() -> int:
    """What the plan's user limit counts: active members plus invitations still open."""
    pending = Invitation.objects.filter(
        accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
    ).count()
    return user_count_active() + pending


def user_list(*, search: str = "", role: str = "", is_active: bool | None = None) -> QuerySet[User]:
    users = User.objects.all().order_by("email")
    if search:
        users = users.filter(Q(email__icontains=search) | Q(full_name__icontains=search))
    if role:
        users = users.filter(role=role)
    if is_active is not None:
        users = users.filter(is_active=is_active)
    return users


def invitation_list_open() -> QuerySet[Invitation]:
    """Invitations not yet accepted or revoked, expired ones included (they say so)."""
    return Invitation.objects.filter(accepted_at__isnull=True, revoked_at__isnull=True).select_related("invited_by")


def api_key_list() -> QuerySet[ApiKey]:
    return ApiKey.objects.select_related("created_by").order_by("revoked_at", "-created_at")


def _can(actor: Actor, perm: Perm) -> bool:
    role = actor_role(actor)
    return role is not None and role_has(role, perm)


def access_user(actor: Actor, user_id: object) -> User:
    """A member by id: any member for those who manage users, oneself for everyone else.

    Missing and forbidden look the same: 404.
    """
    try:
        pk = int(str(user_id))
    except ValueError:
        raise Http404 from None
    user = User.objects.filter(pk=pk).first()
    if user is None or not (_can(actor, Perm.MANAGE_USERS) or (actor.user is not None and actor.user.pk == pk)):
        raise Http404
    return user


def access_invitation(actor: Actor, invitation_id: object) -> Invitation:
    try:
        pk = int(str(invitation_id))
    except ValueError:
        raise Http404 from None
    invitation = Invitation.objects.filter(pk=pk).first()
    if invitation is None or not _can(actor, Perm.MANAGE_USERS):
        raise Http404
    return invitation


def access_api_key(actor: Actor, api_key_id: object) -> ApiKey:
    try:
        pk = int(str(api_key_id))
    except ValueError:
        raise Http404 from None
    api_key = ApiKey.objects.filter(pk=pk).first()
    if api_key is None or not _can(actor, Perm.MANAGE_API_KEYS):
        raise Http404
    return api_key


def invitation_is_expired(invitation: Invitation) -> bool:
    return invitation.expires_at <= timezone.now()
