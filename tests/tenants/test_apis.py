"""The public sign-up (API and HTML form) and the plans API."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, override_settings
from django_tenants.utils import schema_exists

from apps.tenants.models import Domain, Tenant
from tests.conftest import TenantFixture

pytestmark = pytest.mark.django_db

GOOD = {
    "name": "Lake District Water",
    "slug": "lake-district",
    "admin_email": "ops@lake.example.com",
    "admin_password": "Flowing-River-2026",
    "plan": "basic",
}


def signup(client: Client, ip: str = "10.0.0.1", **data: Any) -> Any:
    return client.post("/api/public/signup", {**GOOD, **data}, content_type="application/json", REMOTE_ADDR=ip)


def nothing_created(slug: str) -> bool:
    return not Tenant.objects.filter(slug=slug).exists() and not schema_exists("t_" + slug.replace("-", "_"))


class TestSignupApi:
    def test_creates_the_workspace_and_answers_with_its_url(self, public_client: Client) -> None:
        response = signup(public_client)
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["url"] == "http://lake-district.localhost/"
        assert body["login_url"] == "http://lake-district.localhost/login/"
        assert body["plan"] == "basic"
        assert body["status"] == "trial"
        assert Domain.objects.filter(domain="lake-district.localhost").exists()

        tenant_client = Client(HTTP_HOST="lake-district.localhost")
        login = tenant_client.post("/login/", {"username": GOOD["admin_email"], "password": GOOD["admin_password"]})
        assert login.status_code == 302
        assert tenant_client.get("/dashboard/").status_code == 200

    def test_plan_defaults_to_free(self, public_client: Client) -> None:
        data = {k: v for k, v in GOOD.items() if k != "plan"}
        response = public_client.post("/api/public/signup", data, content_type="application/json")
        assert response.status_code == 201
        assert response.json()["plan"] == "free"

    @pytest.mark.parametrize("missing", ["name", "slug", "admin_email", "admin_password"])
    def test_a_missing_field_is_a_400(self, public_client: Client, missing: str) -> None:
        data = {k: v for k, v in GOOD.items() if k != missing}
        response = public_client.post("/api/public/signup", data, content_type="application/json")
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_input"
        assert missing in error["details"]
        assert nothing_created(GOOD["slug"])

    @pytest.mark.parametrize(
        ("overrides", "field"),
        [
            ({"slug": "www"}, "slug"),
            ({"slug": "api"}, "slug"),
            ({"slug": "Has Spaces"}, "slug"),
            ({"slug": "-bad-"}, "slug"),
            ({"admin_email": "nope"}, "admin_email"),
            ({"admin_password": "short"}, "admin_password"),
            ({"plan": "enterprise"}, "plan"),
            ({"plan": "gold"}, "plan"),
        ],
    )
    def test_bad_input_is_a_400_and_changes_nothing(
        self, public_client: Client, overrides: dict[str, str], field: str
    ) -> None:
        before = Tenant.objects.count()
        response = signup(public_client, **overrides)
        assert response.status_code == 400
        body = response.json()
        assert set(body) == {"error"}
        assert set(body["error"]) == {"code", "message", "details"}
        assert body["error"]["code"] == "invalid_input"
        assert field in body["error"]["details"]
        assert Tenant.objects.count() == before

    def test_duplicate_slug_and_email_are_400s(self, public_client: Client, tenant_alpha: TenantFixture) -> None:
        taken_slug = signup(public_client, slug="alpha")
        assert taken_slug.status_code == 400
        assert "slug" in taken_slug.json()["error"]["details"]
        taken_email = signup(public_client, admin_email=tenant_alpha.admin_email)
        assert taken_email.status_code == 400
        assert "admin_email" in taken_email.json()["error"]["details"]
        assert nothing_created(GOOD["slug"])

    @pytest.mark.parametrize("payload", ["not json", "[1, 2]", '"a string"'])
    def test_a_body_that_is_not_an_object_is_a_400(self, public_client: Client, payload: str) -> None:
        response = public_client.post("/api/public/signup", payload, content_type="application/json")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_input"

    def test_form_encoded_bodies_are_refused(self, public_client: Client) -> None:
        response = public_client.post("/api/public/signup", GOOD)
        assert response.status_code == 415
        assert response.json()["error"]["code"] == "unsupported_media_type"

    def test_get_is_not_allowed(self, public_client: Client) -> None:
        response = public_client.get("/api/public/signup")
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"

    def test_signup_is_not_served_on_tenant_hosts(self, tenant_alpha: TenantFixture) -> None:
        response = tenant_alpha.client().post("/api/public/signup", GOOD, content_type="application/json")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"

    @override_settings(SIGNUP_RATE_LIMIT="3/h")
    def test_sign_ups_are_rate_limited_per_ip(self, public_client: Client) -> None:
        for _ in range(3):
            assert signup(public_client, ip="10.9.9.9", slug="www").status_code == 400  # attempts count
        limited = signup(public_client, ip="10.9.9.9", slug="late-org")
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 0 < int(limited["Retry-After"]) <= 3600
        assert nothing_created("late-org")
        assert signup(public_client, ip="10.9.9.10").status_code == 201  # another address is unaffected

    def test_sign_up_still_works_while_redis_is_down(self, public_client: Client, settings: Any) -> None:
        """The per-IP limit fails open: PostgreSQL alone can create a workspace."""
        settings.CACHES = {
            **settings.CACHES,
            "default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"},
        }
        assert signup(public_client, slug="no-redis-org").status_code == 201


class TestSignupForm:
    def test_signs_up_and_lands_on_the_tenant_login(self, public_client: Client) -> None:
        response = public_client.post("/signup/", {**GOOD, "slug": "form-org"})
        assert response.status_code == 302
        assert response["Location"] == "http://form-org.localhost/login/?email=ops%40lake.example.com&welcome=1"
        assert Tenant.objects.filter(slug="form-org").exists()

    def test_errors_re_render_the_form(self, public_client: Client) -> None:
        response = public_client.post("/signup/", {**GOOD, "slug": "admin"}, HTTP_ACCEPT_LANGUAGE="en")
        assert response.status_code == 400
        assert "is reserved" in response.content.decode()
        assert nothing_created("admin")

    def test_the_form_needs_its_csrf_token(self) -> None:
        client = Client(HTTP_HOST="localhost", enforce_csrf_checks=True)
        response = client.post("/signup/", {**GOOD, "slug": "csrf-org"})
        assert response.status_code == 403
        assert nothing_created("csrf-org")

    @override_settings(SIGNUP_RATE_LIMIT="1/h")
    def test_the_form_is_rate_limited_too(self, public_client: Client) -> None:
        public_client.post("/signup/", {**GOOD, "slug": "www"}, REMOTE_ADDR="10.8.8.8")
        response = public_client.post("/signup/", {**GOOD, "slug": "limited-org"}, REMOTE_ADDR="10.8.8.8")
        assert response.status_code == 429
        assert response["Retry-After"]
        assert nothing_created("limited-org")


class TestLandingAndPlans:
    def test_landing_page_lists_the_plans_from_the_database(self, public_client: Client) -> None:
        page = public_client.get("/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
        for name in ("Free", "Basic", "Pro", "Enterprise"):
            assert name in page
        assert "¥99.00" in page  # to the fen, as every amount: "¥99" did not line up with "¥2.50"
        assert "¥499.00" in page
        assert "Overage: ¥15.00 per 1,000 calls, ¥2.00 per GB-month" in page
        assert 'data-testid="signup-form"' in page

    def test_plans_api(self, public_client: Client) -> None:
        body = public_client.get("/api/public/plans").json()
        codes = [p["code"] for p in body["results"]]
        assert codes == ["free", "basic", "pro", "enterprise"]
        enterprise = body["results"][3]
        assert enterprise["api_calls_per_month"] is None
        assert enterprise["self_serve"] is False
