"""Members, the last admin, the user limit, invitations, deactivation, profile and passwords."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.core import mail
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.accounts import services
from apps.accounts.models import Invitation, Role, User, UserSession
from apps.accounts.tasks import send_invitation_email, send_password_reset_email
from apps.audit.models import AuditEvent
from apps.core.actors import Actor
from apps.core.exceptions import InvalidInput
from apps.tenants.models import Tenant
from apps.tenants.services import tenant_provision
from tests.conftest import ADMIN_PASSWORD, TEST_ACTOR, TenantFixture, admin_of, bearer, jwt_pair, make_member
from tests.mail_server import SmtpServer

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "Another-Strong-Pass-77"


def api(tenant: TenantFixture, user: Any) -> Client:
    return tenant.client(HTTP_ACCEPT_LANGUAGE="en", **bearer(jwt_pair(tenant, user)["access"]))


def send(client: Client, method: str, path: str, data: dict[str, Any] | None = None) -> Any:
    return getattr(client, method)(path, data or {}, content_type="application/json")


class TestMembersApi:
    def test_admin_creates_lists_and_changes_roles(self, tenant_alpha: TenantFixture) -> None:
        client = api(tenant_alpha, admin_of(tenant_alpha))
        created = send(client, "post", "/api/users", {"email": "New@Alpha.example.com", "password": NEW_PASSWORD})
        assert created.status_code == 201
        member = created.json()
        assert member["email"] == "new@alpha.example.com"
        assert member["role"] == "user"
        listed = client.get("/api/users?search=new@").json()
        assert [u["email"] for u in listed["results"]] == ["new@alpha.example.com"]
        assert listed["count"] == 1
        changed = send(client, "patch", f"/api/users/{member['id']}", {"role": "viewer"})
        assert changed.json()["role"] == "viewer"
        assert send(client, "patch", f"/api/users/{member['id']}", {"role": "owner"}).status_code == 400

    def test_duplicate_email_is_a_400(self, tenant_alpha: TenantFixture) -> None:
        client = api(tenant_alpha, admin_of(tenant_alpha))
        response = send(client, "post", "/api/users", {"email": tenant_alpha.admin_email, "password": NEW_PASSWORD})
        assert response.status_code == 400
        assert "email" in response.json()["error"]["details"]

    @pytest.mark.parametrize("action", ["demote", "deactivate", "delete"])
    def test_the_last_active_admin_stays(self, tenant_alpha: TenantFixture, action: str) -> None:
        admin = admin_of(tenant_alpha)
        client = api(tenant_alpha, admin)
        path = f"/api/users/{admin.pk}"
        response = {
            "demote": lambda: send(client, "patch", path, {"role": "user"}),
            "deactivate": lambda: send(client, "post", f"{path}/deactivate"),
            "delete": lambda: client.delete(path),
        }[action]()
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "last_admin"
        assert "last active admin" in error["message"]
        with schema_context(tenant_alpha.tenant.schema_name):
            admin.refresh_from_db()
            assert admin.role == Role.ADMIN
            assert admin.is_active

    def test_with_a_second_admin_the_first_may_step_down(self, tenant_alpha: TenantFixture) -> None:
        admin = admin_of(tenant_alpha)
        make_member(tenant_alpha, Role.ADMIN)
        response = send(api(tenant_alpha, admin), "patch", f"/api/users/{admin.pk}", {"role": "user"})
        assert response.status_code == 200

    def test_deactivation_ends_sessions_and_refresh_tokens(self, tenant_alpha: TenantFixture) -> None:
        member = make_member(tenant_alpha, Role.USER)
        web = tenant_alpha.client()
        assert web.post("/login/", {"username": member.email, "password": ADMIN_PASSWORD}).status_code == 302
        tokens = jwt_pair(tenant_alpha, member)
        with schema_context(tenant_alpha.tenant.schema_name):
            assert UserSession.objects.filter(user_id=member.pk).count() == 1

        with time_machine.travel(timezone.now() + timedelta(seconds=2)):  # tokens' "iat" is in whole seconds
            response = send(api(tenant_alpha, admin_of(tenant_alpha)), "post", f"/api/users/{member.pk}/deactivate")
            assert response.json()["is_active"] is False

            with schema_context(tenant_alpha.tenant.schema_name):
                assert UserSession.objects.filter(user_id=member.pk).count() == 0
            assert web.get("/dashboard/").status_code == 302
            refresh = send(tenant_alpha.client(), "post", "/api/auth/refresh", {"refresh": tokens["refresh"]})
            assert refresh.status_code == 401
            assert tenant_alpha.client().get("/api/auth/me", **bearer(tokens["access"])).status_code == 401

            admin = api(tenant_alpha, admin_of(tenant_alpha))
            assert send(admin, "post", f"/api/users/{member.pk}/reactivate").json()["is_active"] is True
            # Reactivated: the access token from before stays ended for the rest of its 15 minutes; a new login
            # works.
            revived = tenant_alpha.client(HTTP_ACCEPT_LANGUAGE="en").get("/api/auth/me", **bearer(tokens["access"]))
            assert revived.status_code == 401
            assert "deactivated" in revived.json()["error"]["message"]
            fresh = jwt_pair(tenant_alpha, member)["access"]
            assert tenant_alpha.client().get("/api/auth/me", **bearer(fresh)).status_code == 200

    def test_delete(self, tenant_alpha: TenantFixture) -> None:
        member = make_member(tenant_alpha, Role.VIEWER)
        client = api(tenant_alpha, admin_of(tenant_alpha))
        assert client.delete(f"/api/users/{member.pk}").status_code == 204
        assert client.get(f"/api/users/{member.pk}").status_code == 404

    def test_deleting_a_member_takes_as_many_queries_however_much_they_wrote(self, tenant_alpha: TenantFixture) -> None:
        """Django's delete read every conversation and message of the member, 100 at a time: for a year's 5,000
        conversations 219 queries, 1.2 s and 52 MB. Their conversations and messages go in two statements."""
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from apps.chat.models import Conversation, Message

        client = api(tenant_alpha, admin_of(tenant_alpha))
        queries = []
        for conversations in (0, 3, 300):  # the first warms what the host's first requests cache
            member = make_member(tenant_alpha, Role.USER)
            with schema_context(tenant_alpha.tenant.schema_name):
                made = Conversation.objects.bulk_create(Conversation(user=member) for _ in range(conversations))
                Message.objects.bulk_create(Message(conversation=c, role="user", content="levels?") for c in made)
            with CaptureQueriesContext(connection) as captured:
                assert client.delete(f"/api/users/{member.pk}").status_code == 204
            queries.append(len(captured))
            with schema_context(tenant_alpha.tenant.schema_name):
                assert not Conversation.objects.filter(pk__in=[c.pk for c in made]).exists()
                assert not Message.objects.filter(conversation_id__in=[c.pk for c in made]).exists()
                assert not User.objects.filter(pk=member.pk).exists()
        assert queries[1] == queries[2]


def users_allowed(tenant: TenantFixture, limit: int) -> None:
    """``tenant``'s plan allows ``limit`` users (rolled back with the test)."""
    plan = Tenant.objects.get(pk=tenant.tenant.pk).plan
    assert plan is not None
    plan.max_users = limit
    plan.save(update_fields=["max_users"])


class TestUserLimit:
    @pytest.fixture
    def free(self) -> TenantFixture:
        """A free-plan tenant: one user, its admin."""
        result = tenant_provision(
            name="Small", slug="small-water", plan="free", admin_email="boss@small.example.com",
            admin_password=ADMIN_PASSWORD, actor=TEST_ACTOR,
        )  # fmt: skip
        return TenantFixture(result.tenant, "boss@small.example.com", ADMIN_PASSWORD)

    def test_inviting_past_the_plan_limit_is_a_402(self, free: TenantFixture) -> None:
        client = api(free, admin_of(free))
        response = send(client, "post", "/api/invitations", {"email": "second@small.example.com"})
        assert response.status_code == 402
        error = response.json()["error"]
        assert error["code"] == "quota_exceeded"
        assert error["details"]["limit"] == 1
        assert error["details"]["used"] == 1
        created = send(client, "post", "/api/users", {"email": "x@small.example.com", "password": NEW_PASSWORD})
        assert created.status_code == 402

    def test_a_member_created_with_an_open_invitation_takes_its_seat(self, tenant_alpha: TenantFixture) -> None:
        """The invitation stayed open, no longer acceptable, and held a second seat of the limit for 7 days."""
        users_allowed(tenant_alpha, 2)
        client = api(tenant_alpha, admin_of(tenant_alpha))
        assert send(client, "post", "/api/invitations", {"email": "one@alpha.example.com"}).status_code == 201
        created = send(client, "post", "/api/users", {"email": "One@alpha.example.com", "password": NEW_PASSWORD})
        assert created.status_code == 201, created.content  # at 2 of 2 with the invitation: its seat
        open_ones = send(client, "get", "/api/invitations").json()["results"]
        assert [i for i in open_ones if i["email"] == "one@alpha.example.com" and not i.get("revoked_at")] == []
        with schema_context(tenant_alpha.tenant.schema_name):
            from apps.accounts.selectors import user_count_for_quota

            assert user_count_for_quota() == 2

    def test_a_duplicate_at_the_limit_is_a_duplicate(self, free: TenantFixture) -> None:
        """It was a 402, the quota checked first, where an invitation of the same address says "already a member"."""
        client = api(free, admin_of(free))
        again = send(client, "post", "/api/users", {"email": "Boss@small.example.com", "password": NEW_PASSWORD})
        assert again.status_code == 400
        assert "email" in again.json()["error"]["details"]

    def test_pending_invitations_count(self, tenant_alpha: TenantFixture) -> None:
        users_allowed(tenant_alpha, 2)
        client = api(tenant_alpha, admin_of(tenant_alpha))
        assert send(client, "post", "/api/invitations", {"email": "one@alpha.example.com"}).status_code == 201
        second = send(client, "post", "/api/invitations", {"email": "two@alpha.example.com"})
        assert second.status_code == 402
        assert second.json()["error"]["details"]["used"] == 2


class TestInvitations:
    def invite(self, tenant: TenantFixture, email: str = "invitee@alpha.example.com", role: str = "viewer") -> Any:
        return send(api(tenant, admin_of(tenant)), "post", "/api/invitations", {"email": email, "role": role})

    def token(self, tenant: TenantFixture, invitation_id: int) -> str:
        with schema_context(tenant.tenant.schema_name):
            return services.invitation_token(Invitation.objects.get(pk=invitation_id))

    def test_an_invitation_that_loses_a_race_for_its_address_is_a_400(
        self, tenant_alpha: TenantFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Six invitations of one address at once: one was made, one was a 400, four were 500s (the unique
        constraint on open invitations). Here the other request commits its invitation between this one's check
        and its INSERT, as it did then."""
        email = "raced@alpha.example.com"
        check_quota = services._check_user_quota

        def the_other_request_first() -> None:
            Invitation.objects.create(email=email, role="viewer", nonce="0" * 32,
                                      expires_at=timezone.now() + timedelta(days=1))  # fmt: skip
            check_quota()

        monkeypatch.setattr(services, "_check_user_quota", the_other_request_first)
        refused = self.invite(tenant_alpha, email)
        assert refused.status_code == 400, refused.content
        assert refused.json()["error"]["details"]["email"] == [
            "This address already has an open invitation. Revoke it to send a new one."
        ]

    def test_an_invitation_reaches_a_mail_server_that_deferred_it(
        self, tenant_alpha: TenantFixture, smtp_server: SmtpServer
    ) -> None:
        """A busy mail server's 4xx was the end of the task: the invitation never arrived (apps.core.mail)."""
        smtp_server.replies = ["451 4.3.0 Try again later"]
        invitation = self.invite(tenant_alpha).json()
        with schema_context(tenant_alpha.tenant.schema_name):
            assert send_invitation_email.apply(args=[invitation["id"], "en"]).get() == invitation["email"]
        assert smtp_server.attempts == 2
        assert smtp_server.recipients == [[invitation["email"]]]

    def test_invite_email_accept_once(self, tenant_alpha: TenantFixture) -> None:
        invitation = self.invite(tenant_alpha).json()
        assert invitation["role"] == "viewer"
        with schema_context(tenant_alpha.tenant.schema_name):
            send_invitation_email.apply(args=[invitation["id"], "en"])
        assert len(mail.outbox) == 1
        # The link's token is signed with the second it was made in, so it is read from the email.
        link = re.search(r"http://alpha\.localhost/invitations/accept/([^/\s]+)/", str(mail.outbox[0].body))
        assert link is not None
        token = link.group(1)
        with schema_context(tenant_alpha.tenant.schema_name):
            assert token not in str(list(Invitation.objects.values()))  # the token is not stored

        body = {"token": token, "password": NEW_PASSWORD, "full_name": "New Viewer"}
        accepted = send(tenant_alpha.client(), "post", "/api/invitations/accept", body)
        assert accepted.status_code == 201
        assert accepted.json()["role"] == "viewer"
        again = send(tenant_alpha.client(), "post", "/api/invitations/accept", body)
        assert again.status_code == 400
        assert again.json()["error"]["code"] == "invitation_invalid"
        login = tenant_alpha.client().post(
            "/login/", {"username": "invitee@alpha.example.com", "password": NEW_PASSWORD}
        )
        assert login.status_code == 302

    def test_an_expired_or_withdrawn_invitation_is_a_clear_400_page(self, tenant_alpha: TenantFixture) -> None:
        expired = self.invite(tenant_alpha, "late@alpha.example.com").json()
        withdrawn = self.invite(tenant_alpha, "gone@alpha.example.com").json()
        with schema_context(tenant_alpha.tenant.schema_name):
            Invitation.objects.filter(pk=expired["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
        client = api(tenant_alpha, admin_of(tenant_alpha))
        assert client.delete(f"/api/invitations/{withdrawn['id']}").status_code == 204
        for invitation, words in ((expired, "expired"), (withdrawn, "withdrawn")):
            page = tenant_alpha.client().get(
                f"/invitations/accept/{self.token(tenant_alpha, invitation['id'])}/", HTTP_ACCEPT_LANGUAGE="en"
            )
            assert page.status_code == 400
            assert words in page.content.decode()

    def test_a_forged_token_is_refused(self, tenant_alpha: TenantFixture, tenant_beta: TenantFixture) -> None:
        invitation = self.invite(tenant_alpha).json()
        token = self.token(tenant_alpha, invitation["id"])
        assert tenant_alpha.client().get(f"/invitations/accept/{token}x/").status_code == 400
        # Beta has no invitation with that id and nonce.
        assert tenant_beta.client().get(f"/invitations/accept/{token}/").status_code == 400

    def test_the_web_accept_page_sets_the_password_and_logs_in(self, tenant_alpha: TenantFixture) -> None:
        invitation = self.invite(tenant_alpha, role="user").json()
        client = tenant_alpha.client()
        url = f"/invitations/accept/{self.token(tenant_alpha, invitation['id'])}/"
        assert client.get(url).status_code == 200
        mismatch = client.post(url, {"new_password": NEW_PASSWORD, "confirm_password": "other"})
        assert mismatch.status_code == 400
        done = client.post(
            url, {"full_name": "Web Joiner", "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}
        )
        assert done.status_code == 302
        assert client.get("/dashboard/").status_code == 200

    def test_inviting_a_member_or_an_open_address_is_a_400(self, tenant_alpha: TenantFixture) -> None:
        assert self.invite(tenant_alpha, tenant_alpha.admin_email).status_code == 400
        assert self.invite(tenant_alpha).status_code == 201
        assert self.invite(tenant_alpha).status_code == 400

    def test_no_one_hands_out_a_role_above_their_own(self, tenant_alpha: TenantFixture) -> None:
        user = make_member(tenant_alpha, Role.USER)
        with schema_context(tenant_alpha.tenant.schema_name), pytest.raises(InvalidInput) as caught:
            services.invitation_create(actor=Actor(user=user), email="x@alpha.example.com", role=Role.ADMIN)
        assert "role" in caught.value.details


class TestProfileAndPasswords:
    @pytest.mark.parametrize("field", ["role", "is_staff", "is_superuser", "tenant", "email"])
    def test_the_profile_refuses_mass_assignment(self, tenant_alpha: TenantFixture, field: str) -> None:
        member = make_member(tenant_alpha, Role.VIEWER)
        value: Any = {"role": "admin", "is_staff": True, "is_superuser": True, "tenant": "t_beta"}.get(
            field, "x@example.com"
        )
        response = send(api(tenant_alpha, member), "patch", "/api/auth/me", {"full_name": "Still Me", field: value})
        assert response.status_code == 400
        assert field in response.json()["error"]["details"]
        with schema_context(tenant_alpha.tenant.schema_name):
            member.refresh_from_db()
            assert (member.role, member.is_staff, member.is_superuser, member.full_name) == ("viewer", False, False, "")

    def test_the_profile_changes_the_name(self, tenant_alpha: TenantFixture) -> None:
        member = make_member(tenant_alpha, Role.VIEWER)
        response = send(api(tenant_alpha, member), "patch", "/api/auth/me", {"full_name": "Ada Lovelace"})
        assert response.json()["full_name"] == "Ada Lovelace"

    def test_the_profile_keeps_the_language_of_emails(self, tenant_alpha: TenantFixture) -> None:
        member = make_member(tenant_alpha, Role.VIEWER)
        chosen = send(api(tenant_alpha, member), "patch", "/api/auth/me", {"language": "zh-hans"})
        assert chosen.status_code == 200, chosen.content
        assert chosen.json()["language"] == "zh-hans"
        for wrong in ("de", "", None, 1, ["en"]):
            refused = send(api(tenant_alpha, member), "patch", "/api/auth/me", {"language": wrong})
            assert refused.status_code == 400, (wrong, refused.content)
            assert "language" in refused.json()["error"]["details"]
        with schema_context(tenant_alpha.tenant.schema_name):
            member.refresh_from_db()
            assert member.language == "zh-hans"
            (event,) = AuditEvent.objects.filter(action="user.profile_updated", target_id=str(member.pk))
            assert event.metadata == {"language": ["", "zh-hans"]}
        assert send(api(tenant_alpha, member), "patch", "/api/auth/me", {}).json()["language"] == "zh-hans"
        assert api(tenant_alpha, member).get("/api/auth/me").json()["language"] == "zh-hans"

    def test_password_change_ends_other_sessions_and_tokens(self, tenant_alpha: TenantFixture) -> None:
        member = make_member(tenant_alpha, Role.USER)
        other = tenant_alpha.client()
        other.post("/login/", {"username": member.email, "password": ADMIN_PASSWORD})
        current = tenant_alpha.client()
        current.post("/login/", {"username": member.email, "password": ADMIN_PASSWORD})
        tokens = jwt_pair(tenant_alpha, member)

        wrong = current.post("/profile/", {"form": "password", "old_password": "nope", "new_password": NEW_PASSWORD})
        assert wrong.status_code == 400
        weak = current.post("/profile/", {"form": "password", "old_password": ADMIN_PASSWORD, "new_password": "1234"})
        assert weak.status_code == 400
        ok = current.post(
            "/profile/", {"form": "password", "old_password": ADMIN_PASSWORD, "new_password": NEW_PASSWORD}
        )
        assert ok.status_code == 302
        assert current.get("/profile/").status_code == 200  # this session stays
        assert other.get("/profile/").status_code == 302  # the other one ended
        assert tenant_alpha.client().get("/api/auth/me", **bearer(tokens["access"])).status_code == 401
        assert (
            send(tenant_alpha.client(), "post", "/api/auth/refresh", {"refresh": tokens["refresh"]}).status_code == 401
        )

    def test_password_change_by_api(self, tenant_alpha: TenantFixture) -> None:
        member = make_member(tenant_alpha, Role.USER)
        client = api(tenant_alpha, member)
        body = {"old_password": ADMIN_PASSWORD, "new_password": NEW_PASSWORD}
        assert send(client, "post", "/api/auth/password", body).status_code == 204
        with schema_context(tenant_alpha.tenant.schema_name):
            assert User.objects.get(pk=member.pk).check_password(NEW_PASSWORD)


class TestPasswordReset:
    def request_reset(self, tenant: TenantFixture, email: str, ip: str = "10.3.3.3") -> Any:
        return tenant.client().post(
            "/api/auth/password-reset", {"email": email}, content_type="application/json", REMOTE_ADDR=ip
        )

    def test_the_answer_never_says_whether_the_email_exists(self, tenant_alpha: TenantFixture) -> None:
        known = self.request_reset(tenant_alpha, tenant_alpha.admin_email)
        unknown = self.request_reset(tenant_alpha, "nobody@alpha.example.com")
        assert known.status_code == unknown.status_code == 202
        assert known.content == unknown.content

    def test_reset_by_link_works_once(self, tenant_alpha: TenantFixture) -> None:
        member = make_member(tenant_alpha, Role.USER)
        with schema_context(tenant_alpha.tenant.schema_name):
            send_password_reset_email.apply(args=[member.pk, "en"])
        link = next(line for line in mail.outbox[0].body.splitlines() if "/password-reset/" in line).strip()
        path = link.replace("http://alpha.localhost", "")
        _, _, uid, token, _ = path.split("/")
        client = tenant_alpha.client()
        assert client.get(path).status_code == 200
        form = {"new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}
        assert client.post(path, form).status_code == 302
        with schema_context(tenant_alpha.tenant.schema_name):
            assert User.objects.get(pk=member.pk).check_password(NEW_PASSWORD)
        assert client.get(path).status_code == 400  # used
        body = {"uid": uid, "token": token, "new_password": "Third-Password-99"}
        assert send(client, "post", "/api/auth/password-reset/confirm", body).status_code == 400

    def test_reset_requests_are_limited_like_logins(self, tenant_alpha: TenantFixture) -> None:
        for n in range(5):
            assert self.request_reset(tenant_alpha, tenant_alpha.admin_email, ip=f"10.4.4.{n}").status_code == 202
        limited = self.request_reset(tenant_alpha, tenant_alpha.admin_email, ip="10.4.5.1")
        assert limited.status_code == 429
        assert limited["Retry-After"]
        # Unknown addresses are counted the same way, so the limit reveals nothing either.
        for n in range(5):
            self.request_reset(tenant_alpha, "ghost@alpha.example.com", ip=f"10.4.6.{n}")
        assert self.request_reset(tenant_alpha, "ghost@alpha.example.com", ip="10.4.7.1").status_code == 429
