"""Health probes and the one JSON error format."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client, override_settings
from django_tenants.utils import schema_context

from apps.accounts.models import Role, User
from apps.usage.models import UsageEvent
from tests.accounts.test_pages import logged_in
from tests.conftest import TenantFixture, admin_of, api_key_secret, bearer, jwt_pair, make_member

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("host", ["localhost", "alpha.localhost", "127.0.0.1", "unknown.example"])
def test_probes_answer_on_any_host(host: str, tenant_alpha: TenantFixture) -> None:
    client = Client(HTTP_HOST=host)
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert {name: check["ok"] for name, check in ready.json()["checks"].items()} == {
        "database": True,
        "redis": True,
        "broker": True,
    }


def test_readyz_is_503_when_redis_is_unreachable(settings: object) -> None:
    dead = "redis://127.0.0.1:1/0"
    caches = {
        **settings.CACHES,  # type: ignore[attr-defined]
        "default": {**settings.CACHES["default"], "LOCATION": dead},  # type: ignore[attr-defined]
    }
    with override_settings(CACHES=caches, CELERY_BROKER_URL=dead):
        from config.celery import app

        app.conf.broker_url = dead
        try:
            response = Client().get("/readyz")
        finally:
            app.conf.broker_url = settings.CELERY_BROKER_URL  # type: ignore[attr-defined]
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["ok"] is True
    assert checks["redis"]["ok"] is False
    assert checks["broker"]["ok"] is False


@pytest.mark.parametrize("debug", [False, True])
def test_unknown_api_paths_get_the_json_404(
    tenant_alpha: TenantFixture, public_client: Client, settings: Any, debug: bool
) -> None:
    settings.DEBUG = debug  # make run's settings: Django would answer with its HTML debug page
    for client in (tenant_alpha.client(), public_client):
        for path in ("/api/no/such/thing", "/v1/nothing", "/api", "/v1/chat/completions/extra"):
            response = client.get(path)
            assert response.status_code == 404, path
            openai = {"type": "invalid_request_error", "param": None} if path.startswith("/v1/") else {}
            assert response.json() == {
                "error": {"code": "not_found", "message": response.json()["error"]["message"], "details": {}, **openai}
            }
        # Any method: not the CSRF check's 403, which said nothing of the path (a POST to /v1/chat/completions/).
        checked = Client(HTTP_HOST=client.defaults["HTTP_HOST"], enforce_csrf_checks=True)
        for method in ("post", "put", "patch", "delete"):
            response = getattr(checked, method)("/v1/chat/completions/", "{}", content_type="application/json")
            assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found"), method
    assert tenant_alpha.client().get("/no/such/page/").status_code == 404  # pages keep their own 404
    schema = tenant_alpha.client().get("/api/schema")  # it exists with its slash: redirected, as before
    assert (schema.status_code, schema["Location"]) == (301, "/api/schema/")


def test_the_v1_404_has_openais_fields_too(tenant_alpha: TenantFixture) -> None:
    """OpenAI's clients read ``type``; the rest of the API keeps the one format."""
    error = tenant_alpha.client().post("/v1/nothing", "{}", content_type="application/json").json()["error"]
    assert (error["code"], error["type"], error["param"]) == ("not_found", "invalid_request_error", None)
    assert "type" not in tenant_alpha.client().get("/api/nothing").json()["error"]


@pytest.mark.parametrize("spelling", [str.upper, lambda host: f"{host}.", lambda host: f"www.{host}"])
def test_a_workspace_answers_to_its_host_however_it_is_written(
    tenant_alpha: TenantFixture, spelling: Any, settings: Any
) -> None:
    """Host names compare without case, and a trailing dot names the same host (DNS)."""
    host = spelling(tenant_alpha.host)
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, host]
    token = jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]
    response = Client(HTTP_HOST=host, **bearer(token)).get("/api/auth/me")
    assert response.status_code == 200, response.content
    assert response.json()["email"] == admin_of(tenant_alpha).email


def test_unknown_pages_get_an_html_404(tenant_alpha: TenantFixture) -> None:
    response = tenant_alpha.client().get("/no/such/page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_error_messages_follow_the_language(public_client: Client) -> None:
    en = public_client.get("/api/nothing", HTTP_ACCEPT_LANGUAGE="en").json()["error"]["message"]
    zh = public_client.get("/api/nothing", HTTP_ACCEPT_LANGUAGE="zh-hans").json()["error"]["message"]
    assert en == "Not found."
    assert zh != en


def test_a_body_that_is_not_json_is_a_400_in_the_requests_language(tenant_alpha: TenantFixture) -> None:
    messages = {}
    for language in ("en", "zh-hans"):
        response = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE=language).post(
            "/api/auth/login", "{not json", content_type="application/json"
        )
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_input"
        assert error["details"] == {}
        messages[language] = error["message"]
    assert messages["en"] == "The request body is not valid JSON."  # not Python's json error, quoted
    assert messages["zh-hans"] == "请求正文不是有效的 JSON。"


@pytest.mark.parametrize("path", ["/api/conversations", "/v1/chat/completions"])
def test_a_body_of_null_is_a_400_in_the_requests_language(tenant_alpha: TenantFixture, path: str) -> None:
    """null is valid JSON, but not an object: DRF's serializers said so in English only ("No data provided")."""
    credential = api_key_secret(tenant_alpha, Role.ADMIN) if path.startswith("/v1/") else None
    credential = credential or jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]
    messages = {}
    for language in ("en", "zh-hans"):
        client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE=language, **bearer(credential))
        response = client.post(path, "null", content_type="application/json")
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_input"
        messages[language] = error["details"]["non_field_errors"][0]
    assert messages["en"] == "Send a JSON object, not null."
    assert messages["zh-hans"] == "请发送一个 JSON 对象，而不是 null。"


@pytest.mark.parametrize("path", ["/api/auth/login", "/api/conversations", "/v1/chat/completions"])
@pytest.mark.parametrize("depth", [101, 1200, 5000])
def test_a_body_nested_deeper_than_the_limit_is_a_400_that_says_so(
    tenant_alpha: TenantFixture, path: str, depth: int
) -> None:
    """Python's parser gives up at about a thousand levels with a RecursionError, and the parser's walk after it
    went on recursing from where Python's parser stopped (900 to 1450 levels: a 500): before the login too."""
    deep = '{"messages": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"  # the body is a level
    credential = api_key_secret(tenant_alpha, Role.ADMIN) if path.startswith("/v1/") else ""
    if path == "/api/conversations":  # about a person: a member's token, not a key
        credential = jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]
    client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(credential) if credential else {})
    response = client.post(path, deep, content_type="application/json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    too_deep = "The JSON is nested too deeply: at most 100 levels of arrays and objects."
    assert error["details"]["non_field_errors"] == [too_deep]
    at_the_limit = '{"messages": ' + "[" * 99 + "]" * 99 + "}"
    answer = client.post(path, at_the_limit, content_type="application/json").json()["error"]
    assert "non_field_errors" not in answer["details"]  # the fields' own rules refuse it, not its depth


@pytest.mark.parametrize(
    ("body", "param", "details"),
    [
        ('{"messages": [{"role": "user", "content": "hi\\ud800"}]}', "messages", {"0": {"content": "U+D800"}}),
        (
            '{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\uDFFF"}]}]}',
            "messages",
            {"0": {"content": {"0": {"text": "U+DFFF"}}}},
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": '
            '{"name": "f", "parameters": {"type": "object", "maximum": 1e400}}}]}',
            "tools",
            {"0": {"function": {"parameters": {"maximum": "too large"}}}},
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema", '
            '"json_schema": {"name": "x", "schema": {"minimum": -1e999}}}}',
            "response_format",
            {"json_schema": {"schema": {"minimum": "too large"}}},
        ),
        ('{"messages": [{"role": "user", "content": "hi", "\\ud800": 1}]}', "messages", {"0": "U+D800"}),
    ],
)
def test_json_that_cannot_be_sent_on_is_a_400_at_its_path(
    tenant_alpha: TenantFixture, body: str, param: str, details: dict[str, Any]
) -> None:
    """A lone surrogate and a number beyond a float's range are read by Python but cannot be written again: in
    /v1's free-form fields they reached the model server's request and failed there, as a 502."""
    client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(api_key_secret(tenant_alpha, Role.ADMIN)))
    for text in (body, '{"stream": true, ' + body[1:]):
        response = client.post("/v1/chat/completions", text, content_type="application/json")
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("invalid_input", param)

        def matches(found: Any, expected: Any) -> bool:
            if isinstance(expected, str):
                return isinstance(found, list) and expected in found[0]
            return isinstance(found, dict) and all(matches(found.get(k), v) for k, v in expected.items())

        assert matches(error["details"][param], details), error["details"]
    with schema_context(tenant_alpha.tenant.schema_name):
        assert not UsageEvent.objects.exists()  # nothing charged


def test_a_conversations_text_with_a_lone_surrogate_is_refused_as_before(tenant_alpha: TenantFixture) -> None:
    client = tenant_alpha.client(
        HTTP_ACCEPT_LANGUAGE="en", **bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"])
    )
    response = client.post("/api/conversations", '{"title": "a\\ud800"}', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"title": ["Surrogate characters are not allowed: U+D800."]}
    pair = client.post("/api/conversations", '{"title": "\\ud83c\\udf0a"}', content_type="application/json")
    assert pair.status_code == 201  # a pair is one character
    assert pair.json()["title"] == "\U0001f30a"


@pytest.mark.parametrize(
    ("path", "back"),
    [
        ("/usage/spending-cap/", "/usage/"),
        ("/usage/member-daily-calls/", "/usage/"),
        ("/team/{member}/delete/", "/team/"),
        ("/team/invitations/1/revoke/", "/team/"),
        ("/api-keys/1/revoke/", "/api-keys/"),
        ("/services/1/delete/", "/services/"),
        ("/logout/", "/login/"),
    ],
)
def test_a_get_of_a_forms_target_goes_to_its_page_and_does_nothing(
    tenant_alpha: TenantFixture, path: str, back: str
) -> None:
    """The address of a form page shown with its errors, entered again or bookmarked: not a blank 405."""
    client = logged_in(tenant_alpha, Role.ADMIN)
    member = make_member(tenant_alpha, Role.USER, email="kept@alpha.example.com")
    response = client.get(path.format(member=member.pk))
    assert (response.status_code, response["Location"]) == (302, back)
    with schema_context(tenant_alpha.tenant.schema_name):
        assert User.objects.filter(pk=member.pk).exists()
    assert client.get("/dashboard/").status_code == 200  # still logged in
    other = client.put(path.format(member=member.pk))
    assert (other.status_code, other["Allow"]) == (405, "POST")
    assert other["Content-Type"].startswith("text/html")
    assert "only takes a form" in other.content.decode()


def test_a_get_of_the_signup_forms_target_goes_to_the_landing_page(public_client: Client) -> None:
    response = public_client.get("/signup/")
    assert (response.status_code, response["Location"]) == (302, "/")


def test_a_format_the_api_does_not_render_is_a_406_not_a_404(tenant_alpha: TenantFixture) -> None:
    """DRF answered ?format=api (its browsable API, not installed) with a 404, as if the path did not exist."""
    client = tenant_alpha.client(
        HTTP_ACCEPT_LANGUAGE="en", **bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"])
    )
    for path in ("/api/usage?format=api", "/api/conversations?format=xml"):
        response = client.get(path)
        assert response.status_code == 406, path
        error = response.json()["error"]
        assert error["code"] == "not_acceptable"
        assert "JSON only" in error["message"]
    assert client.get("/api/schema/?format=json").status_code == 200  # the schema's own formats still
    for path in ("/api/usage?format=json", "/api/conversations?format=json", "/api/users?format=json"):
        assert client.get(path).status_code == 200, path  # what the 406 says may be given
    refused = client.get("/api/conversations?format=json&colour=blue")
    assert refused.status_code == 400
    assert list(refused.json()["error"]["details"]) == ["colour"]
    assert client.get("/api/schema/?format=yaml").status_code == 200


def test_a_body_in_a_charset_other_than_utf8_is_a_415(tenant_alpha: TenantFixture) -> None:
    """JSON is UTF-8 (RFC 8259, section 8.1). Decoded as declared, UTF-7's ``+2AA-`` was a lone surrogate that the
    parser's check (for ``\\ud800`` escapes) did not see, and /v1 failed on it at the model server, as a 502;
    ``bz2_codec`` would decompress a small body into a large one after the size check. A charset Python does
    not know (``foo``) Django took for UTF-8, and it was accepted."""
    client = tenant_alpha.client(
        HTTP_ACCEPT_LANGUAGE="en", **bearer(jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"])
    )
    key = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(api_key_secret(tenant_alpha, Role.ADMIN)))
    surrogate = b'{"messages": [{"role": "user", "content": "+2AA-"}]}'
    for charset in ("utf-7", "UTF-16", "latin-1", "bz2_codec", "zlib_codec", "utf-8-sig", "foo"):
        for asker, path, body in ((client, "/api/conversations", b"{}"), (key, "/v1/chat/completions", surrogate)):
            response = asker.generic("POST", path, body, f"application/json; charset={charset}")
            assert response.status_code == 415, (charset, path, response.content)
            error = response.json()["error"]
            assert error["code"] == "unsupported_media_type"
            assert (
                error["message"] == f"Send JSON in UTF-8 (charset=utf-8, or no charset): “{charset}” is not accepted."
            )
    with schema_context(tenant_alpha.tenant.schema_name):
        assert not UsageEvent.objects.exists()  # nothing charged
    for charset in ("utf-8", "UTF-8", "utf8"):
        response = client.generic(
            "POST", "/api/conversations", '{"title": "水位"}'.encode(), f"application/json; charset={charset}"
        )
        assert response.status_code == 201, (charset, response.content)
        assert response.json()["title"] == "水位"


@pytest.mark.parametrize("path", ["/api/auth/login", "/api/conversations", "/v1/chat/completions"])
def test_a_body_over_the_upload_limit_is_a_413_that_says_the_limit(
    tenant_alpha: TenantFixture, path: str, settings: Any
) -> None:
    """Django's RequestDataTooBig was handler400's "The request is not valid.", without the rate-limit headers."""
    credential = api_key_secret(tenant_alpha, Role.ADMIN) if path.startswith("/v1/") else ""
    if path == "/api/conversations":
        credential = jwt_pair(tenant_alpha, admin_of(tenant_alpha))["access"]
    client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(credential) if credential else {})
    body = '{"title": "' + "a" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE + '"}'
    response = client.post(path, body, content_type="application/json")
    assert response.status_code == 413, response.content
    error = response.json()["error"]
    assert (error["code"], error["message"]) == (  # Django's sizes: a no-break space
        "request_too_large",
        "The request is too large: send at most 2.5\xa0MB.",
    )
    assert error["details"] == {"limit": 2_621_440}
    if path.startswith("/v1/"):
        assert (error["type"], error["param"]) == ("invalid_request_error", None)
    assert ("X-RateLimit-Remaining" in response) == bool(credential)  # counted, as any request with a credential
    with schema_context(tenant_alpha.tenant.schema_name):
        assert not UsageEvent.objects.exists()


def test_a_form_over_the_upload_limit_is_a_413_page(tenant_alpha: TenantFixture, settings: Any) -> None:
    client = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en")
    response = client.post("/login/", {"email": "a" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE, "password": "x"})
    assert response.status_code == 413
    assert response["Content-Type"].startswith("text/html")
    assert "The request is too large: send at most 2.5\xa0MB." in response.content.decode()


def test_a_body_too_large_outside_an_api_view_is_the_json_413_under_the_api(rf: Any) -> None:
    """handler400, for a body read before an API view reads it (the views answer it themselves, above)."""
    from django.core.exceptions import RequestDataTooBig

    from apps.core.views import bad_request

    response = bad_request(rf.post("/v1/chat/completions"), RequestDataTooBig("too big"))
    assert response.status_code == 413
    error = json.loads(response.content)["error"]
    assert (error["code"], error["details"], error["type"]) == ("request_too_large", {"limit": 2_621_440},
                                                                "invalid_request_error")  # fmt: skip
    assert bad_request(rf.post("/api/users"), RequestDataTooBig("too big"))["Content-Type"] == "application/json"
