"""One workspace cannot take every thread of a web process (apps.tenants.middleware.TenantShareMiddleware)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest
from django_tenants.utils import schema_context

from apps.accounts.models import ApiKey
from apps.tenants.db import connection
from tests.conftest import TenantFixture, api_key_secret
from tests.processes import WebServer, serve


@pytest.fixture
def keys(django_db_blocker: Any, tenant_alpha: TenantFixture, tenant_beta: TenantFixture) -> Iterator[tuple[str, str]]:
    """A committed API key of alpha and one of beta, for the server process to see."""
    with django_db_blocker.unblock():
        pair = api_key_secret(tenant_alpha, "user"), api_key_secret(tenant_beta, "user")
    yield pair
    with django_db_blocker.unblock():
        for fixture, secret in zip((tenant_alpha, tenant_beta), pair, strict=True):
            with schema_context(fixture.tenant.schema_name):
                ApiKey.objects.filter(prefix=secret[3:15]).delete()
        connection.set_schema_to_public()


@pytest.fixture
def server(tmp_path: Path, demo_model_url: str) -> Iterator[WebServer]:
    """One process of 4 threads, of which one workspace may hold 2."""
    with serve(tmp_path, demo_model_url, workers=1, threads=4, TENANT_MAX_IN_FLIGHT="2") as running:
        yield running


def ask(server: WebServer, slug: str, key: str, content: str, **body: Any) -> httpx2.Response:
    return httpx2.post(
        f"http://127.0.0.1:{server.port}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": content}], **body},
        headers={"Host": f"{slug}.localhost:{server.port}", "Authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_a_workspace_holding_its_share_leaves_the_others_theirs(server: WebServer, keys: tuple[str, str]) -> None:
    alpha, beta = keys
    with ThreadPoolExecutor(4) as pool:
        slow = [pool.submit(ask, server, "alpha", alpha, "hi #slow") for _ in range(4)]  # 3 s before the model answers
        time.sleep(0.5)
        started = time.monotonic()
        beta_headers = {"Host": f"beta.localhost:{server.port}", "Authorization": f"Bearer {beta}"}
        other = httpx2.get(f"http://127.0.0.1:{server.port}/v1/models", headers=beta_headers, timeout=30)
        took = time.monotonic() - started
        answers = [future.result() for future in slow]
    assert other.status_code == 200
    assert took < 1.5, f"beta waited {took:.1f} s behind alpha's requests"
    assert sorted(a.status_code for a in answers) == [200, 200, 429, 429]
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "rate_limited"
    assert ask(server, "alpha", alpha, "hi").status_code == 200  # the places were given back


def test_a_stream_holds_its_place_until_it_is_closed(server: WebServer, keys: tuple[str, str]) -> None:
    alpha, _beta = keys
    url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
    headers = {"Host": f"alpha.localhost:{server.port}", "Authorization": f"Bearer {alpha}"}
    body = {"stream": True, "messages": [{"role": "user", "content": "hi #long"}]}
    with httpx2.Client(timeout=30) as first, httpx2.Client(timeout=30) as second:
        with (
            first.stream("POST", url, json=body, headers=headers) as one,
            second.stream("POST", url, json=body, headers=headers) as two,
        ):
            assert (one.status_code, two.status_code) == (200, 200)
            reading = one.iter_bytes()  # kept: a reader thrown away closes the response
            assert next(reading).startswith(b"data: ")
            assert (
                ask(server, "alpha", alpha, "hi").status_code == 429
            )  # both places held by the open streams  # both places held by the open streams
        # Both clients hung up: the server closes the responses and gives the places back.
        deadline = time.monotonic() + 10
        while (status := ask(server, "alpha", alpha, "hi").status_code) == 429 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status == 200


def _request(schema: str) -> Any:
    from types import SimpleNamespace

    from django.test import RequestFactory

    request = RequestFactory().post("/api/conversations/1/messages", HTTP_ACCEPT_LANGUAGE="en")
    request.tenant = SimpleNamespace(schema_name=schema)  # type: ignore[attr-defined]  # the routing middleware sets it
    return request


@pytest.mark.django_db  # closing a response sends request_finished, which looks at the connection
def test_busy_workspaces_together_leave_threads_for_a_quiet_one(settings: Any) -> None:
    """Each within its half of the threads, two busy workspaces took them all, and a third waited behind them."""
    from django.http import StreamingHttpResponse

    from apps.tenants.middleware import TenantShareMiddleware

    settings.WEB_THREADS, settings.TENANT_MAX_IN_FLIGHT, settings.TENANT_RESERVED_THREADS = 8, 4, 2
    share = TenantShareMiddleware(lambda request: StreamingHttpResponse(iter([b"x"])))

    def ask(schema: str) -> Any:
        return share(_request(schema))

    alpha = [ask("t_alpha") for _ in range(4)]  # its half: 4 of 8
    assert all(response.status_code == 200 for response in alpha)
    beta = [ask("t_beta") for _ in range(2)]  # two, whatever the others hold
    assert all(response.status_code == 200 for response in beta)
    refused = ask("t_beta")  # a third while only the 2 reserved threads are free
    assert refused.status_code == 429
    assert json.loads(refused.content)["error"]["details"] == {"retry_after": 1, "in_progress": 2}
    assert ask("t_gamma").status_code == 200  # a quiet workspace still gets in
    alpha[0].close()
    alpha[1].close()  # two places free again: 6 in progress
    assert ask("t_beta").status_code == 200
    assert ask("t_alpha").status_code == 429  # 2 + 3 with beta's third and gamma's: past the open places again
