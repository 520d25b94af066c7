"""The one base class of the tenant API.

``TenantApi`` authenticates (API key, JWT or session), checks that the
credential belongs to ``request.tenant``, and enforces ``required_permission``
from the permission map. Every concrete subclass must declare
``required_permission`` (a ``Perm``, or ``AUTHENTICATED`` for "any member").
Subclasses cannot replace the authentication or permission machinery: the
class refuses to be defined if they try. The only escape hatch is
``dangerously_allow_anonymous = True``, for the few endpoints that exist to
log in (login, refresh, password reset, accepting an invitation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from django.utils.translation import gettext as _
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from apps.accounts.models import User
from apps.accounts.permissions import Perm
from apps.api.authentication import ApiKeyAuthentication, TenantJWTAuthentication, TenantSessionAuthentication
from apps.api.fields import refuse_non_strings
from apps.api.pagination import Pagination
from apps.api.permissions import HasRequiredPermission
from apps.core.actors import Actor, request_actor
from apps.core.exceptions import ApplicationError, RateLimited
from apps.usage.meter import Meter

#: ``required_permission`` for endpoints any authenticated member or key may use.
AUTHENTICATED: Any = None

_UNDECLARED = object()
_SEALED = (
    "check_throttles",
    "finalize_response",
    "authentication_classes",
    "permission_classes",
    "initial",
    "check_permissions",
    "check_object_permissions",
    "perform_authentication",
    "get_authenticators",
    "get_permissions",
)


class JsonSerializer(serializers.Serializer):
    """An input serializer whose text fields take JSON strings only (``apps.api.fields.refuse_non_strings``)."""

    def to_internal_value(self, data: Any) -> Any:
        refuse_non_strings(self.fields, data)
        return super().to_internal_value(data)


class StrictSerializer(JsonSerializer):
    """An input serializer that also answers 400 for fields it does not know (no mass assignment)."""

    #: Names accepted without being fields (``StrictQuery``'s ``format``).
    passes: ClassVar[frozenset[str]] = frozenset()

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields) - self.passes)
            if unknown:
                raise serializers.ValidationError({name: [_("This field is not accepted here.")] for name in unknown})
        return super().to_internal_value(data)


class StrictQuery(StrictSerializer):
    """A list's query parameters: unknown ones refused as a body's fields are, but DRF's ``?format=``, which the
    content negotiation reads (``format=json``: apps.api.negotiation says it may be given)."""

    passes = frozenset({api_settings.URL_FORMAT_OVERRIDE})

    def to_internal_value(self, data: Any) -> Any:
        """A parameter given twice (``?from=…&from=…``) is a 400 naming it: which one was meant is not ours to
        guess, and DRF silently took the last."""
        if hasattr(data, "lists"):
            repeated = sorted(name for name, values in data.lists() if len(values) > 1)
            if repeated:
                raise serializers.ValidationError({name: [_("Give this parameter once.")] for name in repeated})
        return super().to_internal_value(data)


class NoQuery(StrictQuery):
    """The query of an endpoint that takes no parameters: any is refused, a typo (``?form=``) as much as a
    parameter the endpoint never had, as the lists refuse what they do not declare."""


class NoBody(StrictSerializer):
    """The body of an action that takes none (enable, test, deactivate, a DELETE): nothing, or ``{}``; any
    field is refused by name, as the write endpoints refuse a field their ``InputSerializer`` does not know."""


#: Methods that may carry a body; an operation of these without an ``InputSerializer`` takes ``NoBody``.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class TenantApi(APIView):
    authentication_classes = (ApiKeyAuthentication, TenantJWTAuthentication, TenantSessionAuthentication)
    permission_classes = (HasRequiredPermission,)
    pagination_class = Pagination

    required_permission: ClassVar[Any] = _UNDECLARED
    dangerously_allow_anonymous: ClassVar[bool] = False
    #: Media types the endpoint answers in itself, outside DRF's renderers (a stream of events, a file): an
    #: ``Accept`` naming one is not a 406 (apps.api.negotiation); errors are still JSON.
    answers_also: ClassVar[tuple[str, ...]] = ()
    #: Which credentials the endpoint accepts; a subclass may narrow it (never widen the checks).
    credentials: ClassVar[tuple[str, ...]] = ("api_key", "jwt", "session")
    #: The endpoint makes AI calls: it passes ``self.meter`` to its service, whose first
    #: charge counts the rate limit and the call in one Redis round trip.
    metered: ClassVar[bool] = False
    meter: Meter | None = None
    #: The query parameters the operation takes, checked before it runs (after the credentials and the role):
    #: none by default; a list names its ``FilterSerializer`` or ``PageOnlyQuery``. None: not checked (``/v1``,
    #: where OpenAI's clients may add parameters of their own).
    query: ClassVar[type[serializers.Serializer] | None] = NoQuery
    #: The query as ``query`` read it in ``initial``, for the operation to use: checked once, not again in ``get``.
    query_data: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _SEALED:
            if name in cls.__dict__:
                raise TypeError(f"{cls.__name__} may not override {name}: TenantApi enforces authentication")
        if not cls.__name__.startswith("_") and cls.required_permission is _UNDECLARED:
            raise TypeError(f"{cls.__name__} must declare required_permission (a Perm, or AUTHENTICATED)")
        if cls.required_permission not in (_UNDECLARED, None) and not isinstance(cls.required_permission, Perm):
            raise TypeError(f"{cls.__name__}.required_permission must be a Perm")

    def check_permissions(self, request: Request) -> None:
        """The tenant's per-minute rate limit (apps.usage.meter), then the role's permission.

        DRF checks permissions before throttles; the rate limit comes first here,
        so a request refused for its role counts and carries the rate-limit headers
        too: it was made with the tenant's credentials. Anonymous endpoints (logging
        in) and requests without valid credentials are not counted, so nobody can
        use up a tenant's limit without them; per-IP limits guard those instead.
        """
        if not self.dangerously_allow_anonymous and request.user and request.user.is_authenticated:
            self.meter = Meter.for_request(request, self.actor(request))
            if not self.metered:
                self.meter.hit_rate()
        super().check_permissions(request)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """DRF's checks (credentials, role, rate limit), then the query and, for an operation that reads no body
        (no ``InputSerializer``), the body: what an operation does not take is a 400 naming it, on every
        operation alike, not ignored by those without parameters or fields of their own."""
        super().initial(request, *args, **kwargs)
        if request.method == "OPTIONS":
            return
        self.query_data = {}
        # An empty query is read only where it gives defaults (a list's): a chat turn's POST has nothing to refuse.
        if self.query is not None and (request.query_params or self.query is not NoQuery):
            checked = self.query(data=request.query_params)
            checked.is_valid(raise_exception=True)
            self.query_data = checked.validated_data
        if request.method in _BODY_METHODS and not hasattr(self, "InputSerializer"):
            NoBody(data=request.data).is_valid(raise_exception=True)

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        """The rate-limit headers; and a metered request refused before its first AI call (bad input, 403,
        404, 409) counts here, and over the limit its answer becomes the 429 every other request gets.

        Its first charge would have counted and enforced the limit in the charge's round trip;
        this hit is the round trip it makes instead, so enforcing costs nothing. Replacing the
        answer changes nothing else: a metered endpoint does nothing before its first charge.
        """
        if self.meter is not None and self.meter.count_rate:
            try:
                self.meter.hit_rate()
            except RateLimited as exc:
                response = self.handle_exception(exc)
        response = super().finalize_response(request, response, *args, **kwargs)
        if self.meter is not None and self.meter.rate is not None:
            for name, value in self.meter.rate.headers().items():
                response[name] = value
        return response

    def get_authenticators(self) -> list[Any]:
        # Endpoints that exist to log in ignore whatever credential is (still) sent.
        if self.dangerously_allow_anonymous:
            return []
        kinds = {
            ApiKeyAuthentication: "api_key",
            TenantJWTAuthentication: "jwt",
            TenantSessionAuthentication: "session",
        }
        return [auth() for auth in self.authentication_classes if kinds.get(auth) in self.credentials]

    def actor(self, request: Request) -> Actor:
        return request_actor(request, label="anonymous")

    def member(self, request: Request) -> User:
        """The logged-in member; API keys are refused for endpoints about a person."""
        if not isinstance(request.user, User):
            raise ApplicationError(
                _("This endpoint is about a person: log in as a member instead of using an API key."),
                code="member_required",
                status_code=403,
            )
        return request.user

    def paginate(
        self,
        request: Request,
        queryset: Any,
        serializer_class: type[serializers.Serializer],
        context: Callable[[list[Any]], dict[str, Any]] | None = None,
    ) -> Any:
        """One page of ``queryset``; ``context`` gives the serializer's context from the page's rows.

        ``page`` and ``page_size`` out of range are a 400 on every list: not DRF's 404 for ``page=-1``, nor a
        ``page_size`` of a billion quietly cut to the most. ``initial`` checked them, with the rest of the
        query: a list's ``query`` takes the page (``PageOnlyQuery``, or a ``FilterSerializer`` with
        ``PageQuery``)."""
        if not (isinstance(self.query, type) and issubclass(self.query, PageQuery)):
            raise TypeError(f"{type(self).__name__} pages a list: its query must take the page (PageQuery)")
        paginator = self.pagination_class()
        page: Any = paginator.paginate_queryset(queryset, request, view=self)
        extra = context(list(page)) if context is not None else {}
        return paginator.get_paginated_response(serializer_class(page, many=True, context=extra).data)


class PageQuery(serializers.Serializer):
    """The paging parameters of a list. A list with filters of its own declares them with these
    (``class FilterSerializer(StrictQuery, PageQuery)``), as a ``StrictQuery`` refuses what it does
    not declare."""

    page = serializers.IntegerField(required=False, min_value=1)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=Pagination.max_page_size)


class PageOnlyQuery(StrictQuery, PageQuery):
    """The query of a list without filters: its paging, and nothing else."""
