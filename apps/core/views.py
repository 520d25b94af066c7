"""Error pages: JSON under /api/ and /v1/, HTML elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.urls import Resolver404, resolve
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django_guid import get_guid

from apps.core.exceptions import RequestTooLarge, add_openai_fields, error_body, json_error

API_PREFIXES = ("/api/", "/v1/")


def is_api_request(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIXES) or request.path in ("/api", "/v1")


def error_page(
    request: HttpRequest, *, status: int, title: str, message: str, code: str = "", reference: str = ""
) -> HttpResponse:
    context = {"status": status, "title": title, "message": message, "code": code, "reference": reference}
    return render(request, "errors/error.html", context, status=status)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return json_error("not_found", _("Not found."), status=404, request=request)
    return error_page(request, status=404, title=_("Page not found"), message=_("There is nothing at this address."))


@csrf_exempt  # it changes nothing, and a POST to a mistyped path is a 404, not the CSRF check's 403
def api_path_not_found(request: HttpRequest) -> HttpResponse:
    """Any path under /api/ or /v1/ that nothing else answers (the URL confs' last pattern): the JSON
    404, under DEBUG too, where Django would show its HTML debug page instead of ``handler404``.

    A path that exists with a trailing slash (the schema, the docs) is redirected there, as
    Django's APPEND_SLASH did before this pattern matched everything under /api/.
    """
    if settings.APPEND_SLASH and not request.path_info.endswith("/"):
        try:
            match = resolve(f"{request.path_info}/", getattr(request, "urlconf", None))
        except Resolver404:
            match = None
        if match is not None and match.func is not api_path_not_found:
            return HttpResponsePermanentRedirect(request.get_full_path(force_append_slash=True))
    if request.path.startswith("/v1/"):  # as OpenAI's "Invalid URL (POST /v1/embeddings)": which, and what is
        return json_error("not_found", _v1_paths_words(request), status=404, request=request)
    return not_found(request)


@csrf_exempt  # as api_path_not_found
def openai_path_without_v1(request: HttpRequest) -> HttpResponse:
    """OpenAI's paths without /v1 (``/chat/completions``, ``/models``) on a workspace's host: a client given the
    host as its base URL, the most common mistake in setting one up. It got the HTML page of an unknown address,
    which OpenAI's clients show whole as the error's message; a JSON 404 says where the API is."""
    words = _("There is no API at %(path)s: OpenAI's clients take the base URL with /v1 at its end: %(base)s") % {
        "path": request.path[:200],
        "base": request.build_absolute_uri("/v1"),
    }
    body = error_body("not_found", words)
    add_openai_fields(body["error"], 404)
    return JsonResponse(body, status=404, json_dumps_params={"ensure_ascii": False})


def _v1_paths_words(request: HttpRequest) -> str:
    return _(
        "Nothing answers %(method)s %(path)s. /v1 answers GET /v1/models, GET /v1/models/{model} and "
        "POST /v1/chat/completions."
    ) % {"method": request.method, "path": request.path[:200]}


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return json_error("permission_denied", _("You do not have permission to do this."), status=403, request=request)
    return error_page(
        request, status=403, title=_("Forbidden"), message=_("You do not have permission to see this page.")
    )


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if isinstance(exception, RequestDataTooBig):
        return request_too_large(request)
    if is_api_request(request):
        return json_error("invalid_input", _("The request is not valid."), status=400, request=request)
    return error_page(request, status=400, title=_("Bad request"), message=_("The request is not valid."))


def request_too_large(request: HttpRequest) -> HttpResponse:
    """A body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` read outside an API view (a page's form; the API's views answer
    it themselves): 413, saying the limit, as JSON under /api/ and /v1/ and as a page elsewhere."""
    too_large = RequestTooLarge()
    if is_api_request(request):
        return json_error(too_large.code, too_large.message, status=413, details=too_large.details, request=request)
    return error_page(request, status=413, title=_("Too large"), message=too_large.message)


def server_error(request: HttpRequest) -> HttpResponse:
    """The 500, with the request's id to quote (``X-Request-ID``; the log's lines of the failure carry it too)."""
    reference = get_guid() or ""
    message = _("Something went wrong on our side. It has been logged.")
    if is_api_request(request):
        return json_error("server_error", message, status=500, details={"request_id": reference}, request=request)
    return error_page(request, status=500, title=_("Server error"), message=message, reference=reference)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    if is_api_request(request):
        return json_error(
            "csrf_failed", _("The CSRF check failed. Reload the page and try again."), status=403, request=request
        )
    return error_page(
        request, status=403, title=_("Form expired"), message=_("The CSRF check failed. Reload the page and try again.")
    )


def post_only(back: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """A page's form target, which only a POST uses: a GET (the address of a form page shown with its
    errors, entered again or bookmarked) goes to the page named ``back`` instead of the browser's
    blank 405; another method gets the 405 error page. Nothing is done either way.
    """

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method == "POST":
                return view(request, *args, **kwargs)
            if request.method in ("GET", "HEAD"):
                return redirect(back)
            response = error_page(
                request, status=405, title=_("Not allowed"), message=_("This address only takes a form's answers.")
            )
            response["Allow"] = "POST"
            return response

        return checked

    return decorator
