"""The error format every API speaks, and the exceptions services raise.

Every API error is ``{"error": {"code": ..., "message": ..., "details": {...}}}``.
The ``code`` is stable and machine-readable; the ``message`` is localized.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, JsonResponse
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_default_handler

from apps.core.languages import Words, words_of


class ApplicationError(Exception):
    """A business rule said no. Services raise it; the API turns it into JSON."""

    status_code = 400
    code = "invalid_input"

    def __init__(
        self,
        message: str | Words,
        *,
        code: str | None = None,
        status_code: int | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """``message`` in the active language, or the Words that build it in any: what a failed turn stores, to
        show each reader in theirs (apps.core.languages)."""
        self.words = words_of(message)
        self.message = self.words()
        super().__init__(self.message)
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.details = details or {}
        self.headers = headers or {}


class InvalidInput(ApplicationError):
    """Input that breaks a rule; ``details`` maps each field to its messages."""

    status_code = 400
    code = "invalid_input"


def fields_refused(errors: dict[str, list[str]], *, alone: InvalidInput | None = None) -> InvalidInput:
    """The 400 for several fields' ``errors``: ``alone`` (a refusal with a code of its own, such as ``unsafe_url``)
    when its field is the only one refused, else ``invalid_input`` with them all."""
    if alone is not None and len(errors) == 1:
        return alone
    return InvalidInput(_("The input is not valid."), details=errors)


class QuotaExceeded(ApplicationError):
    """A plan limit was reached; ``details`` has quota, limit, used and resets_at."""

    status_code = 402
    code = "quota_exceeded"


class RateLimited(ApplicationError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, *, retry_after: int, message: str | None = None) -> None:
        retry_after = max(1, int(retry_after))
        super().__init__(
            message or _("Too many requests. Try again in %(seconds)d seconds.") % {"seconds": retry_after},
            details={"retry_after": retry_after},
            headers={"Retry-After": str(retry_after)},
        )


class RequestTooLarge(ApplicationError):
    """A body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``: Django's ``RequestDataTooBig``, in words, with the limit in
    bytes. Django answers it with ``handler400``'s "the request is not valid", which does not say what to change."""

    status_code = 413
    code = "request_too_large"

    def __init__(self) -> None:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        message = _("The request is too large: send at most %(size)s.") % {"size": filesizeformat(limit)}
        super().__init__(message, details={"limit": limit})


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": str(message), "details": details or {}}}


def json_error(
    code: str,
    message: str,
    *,
    status: int,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    request: HttpRequest | None = None,
) -> JsonResponse:
    """A plain Django response in the API error format, for code outside DRF; for a ``request`` under /v1/
    with OpenAI's fields, as ``api_exception_handler`` gives DRF's errors."""
    body = error_body(code, message, details)
    if _openai_path(request):
        add_openai_fields(body["error"], status)
    response = JsonResponse(body, status=status, json_dumps_params={"ensure_ascii": False})
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def put_on_form(form: Any, exc: ApplicationError) -> None:
    """Put a service's error on a Django form, as the API puts it in ``details``.

    Each problem goes on the field it names, or on the form where the form has no such
    field. Where the details hold no problems (a quota's limit, use and reset time), the
    message goes on the form.
    """
    placed = False
    for name, detail in (exc.details or {}).items():
        problems = [detail] if isinstance(detail, str) and name in form.fields else detail
        if not isinstance(problems, list):
            continue
        for problem in problems:
            form.add_error(name if name in form.fields else None, str(problem))
            placed = True
    if not placed:
        form.add_error(None, exc.message)


def _field_details(detail: Any) -> dict[str, Any]:
    if isinstance(detail, dict):
        return {str(k): v for k, v in detail.items()}
    if isinstance(detail, list):
        return {"non_field_errors": detail}
    return {"non_field_errors": [detail]}


# DRF's exceptions, mapped to our stable error codes; the first match wins.
_DRF_CODES: list[tuple[type[drf_exceptions.APIException], str]] = [
    (drf_exceptions.NotAuthenticated, "not_authenticated"),
    (drf_exceptions.AuthenticationFailed, "not_authenticated"),
    (drf_exceptions.PermissionDenied, "permission_denied"),
    (drf_exceptions.MethodNotAllowed, "method_not_allowed"),
    (drf_exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (drf_exceptions.NotAcceptable, "not_acceptable"),
]
# Codes that subclasses of those exceptions may carry through unchanged.
_OWN_CODES = frozenset({"token_tenant_mismatch"})


def _message(detail: Any) -> str:
    """simplejwt puts a dict in ``detail``; everyone else a string."""
    if isinstance(detail, dict):
        return str(detail.get("detail", ""))
    return str(detail)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every error leaves in the one JSON format (under /v1/ with OpenAI's
    ``type`` and ``param`` as well)."""
    response = _error_response(exc, context)
    request = context.get("request")
    if response is not None and _openai_path(request):
        add_openai_fields(response.data["error"], response.status_code)
    return response


def _openai_path(request: Any) -> bool:
    """Under /v1/: errors also carry OpenAI's fields, for OpenAI's clients."""
    return request is not None and request.path.startswith("/v1/")


# OpenAI's error types by status, for OpenAI's clients (their exceptions' ``type``).
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def add_openai_fields(error: dict[str, Any], status: int) -> None:
    """OpenAI's ``type`` and ``param`` next to ours: the field a 400 is about, if it names one."""
    if error["code"] == "quota_exceeded":
        error["type"] = "insufficient_quota"
    else:
        error["type"] = _OPENAI_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    fields = [name for name, problems in error["details"].items() if isinstance(problems, list | dict)]
    # A problem of the body as a whole (DRF's non_field_errors: null, [], a body nested too deep) names no field.
    error["param"] = fields[0] if status == 400 and fields and fields[0] != "non_field_errors" else None
    problem = _first_text(error["details"][fields[0]]) if status == 400 and fields else ""
    if problem and error["code"] == "invalid_input":  # OpenAI's clients show the message alone: say what is wrong
        said = {"message": error["message"], "param": error["param"], "problem": problem}
        if error["param"]:
            error["message"] = _("%(message)s %(param)s: %(problem)s") % said
        else:
            error["message"] = _("%(message)s %(problem)s") % said


def _first_text(problems: Any) -> str:
    """The first message in a field's details (nested for lists of objects, such as ``messages``)."""
    if isinstance(problems, str):
        return problems
    values = problems.values() if isinstance(problems, dict) else problems if isinstance(problems, list) else ()
    return next((text for text in map(_first_text, values) if text), "")


def _error_response(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RequestDataTooBig):  # reading request.data: the view's answer, with its rate-limit headers
        exc = RequestTooLarge()
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status_code, headers=exc.headers)
    if isinstance(exc, DjangoValidationError):
        exc = drf_exceptions.ValidationError(detail=exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    elif isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()

    response = drf_default_handler(exc, context)
    if response is None:
        return None  # a bug: Django's 500 handling takes over

    assert isinstance(exc, drf_exceptions.APIException)
    if isinstance(exc, drf_exceptions.ValidationError):
        body = error_body("invalid_input", _("The input is not valid."), _field_details(exc.detail))
    elif isinstance(exc, drf_exceptions.NotFound):
        body = error_body("not_found", _("Not found."))
    elif isinstance(exc, drf_exceptions.ParseError):
        # JSONParser's own message is English and quotes Python's json error.
        body = error_body("invalid_input", _("The request body is not valid JSON."))
    elif isinstance(exc, drf_exceptions.Throttled):
        wait = int(exc.wait or 1)  # type: ignore[attr-defined]
        body = error_body("rate_limited", str(exc.detail), {"retry_after": wait})
    else:
        code = str(exc.default_code)
        if code not in _OWN_CODES:
            code = next((code for cls, code in _DRF_CODES if isinstance(exc, cls)), code)
        details = {"permission": exc.permission} if hasattr(exc, "permission") else {}
        body = error_body(code, _message(exc.detail), details)
    response.data = body
    return response
