"""The floor for ``bench/chat_ttft.py --relay``: a streaming relay with none of HydroNet's work.

Under the same web server command as HydroNet, it answers the bench's two requests
as HydroNet's API does, but does only what any proxy in front of the model
server must: it reads the request, sends the model server the same request
HydroNet sends (httpx, no openai client), and writes each content delta back as
a ``token`` event as it arrives. No routing, authentication, database, Redis or
Django. What it adds to the direct time to first token is what the server, the
extra hop and the relaying cost on the machine; what HydroNet adds beyond it is
HydroNet's own work.

Only that benchmark serves it (``deploy.web``'s command with ``bench.relay_wsgi:application``); it reads
``LLM_BASE_URL`` and ``BENCH_SYSTEM_PROMPT`` from the environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx2

_client = httpx2.Client(timeout=60, limits=httpx2.Limits(max_connections=64))


def _relay(content: str) -> Iterator[bytes]:
    request = {
        "model": os.environ.get("LLM_MODEL", "hydronet-demo"),
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": os.environ["BENCH_SYSTEM_PROMPT"]},
            {"role": "user", "content": content},
        ],
    }
    url = os.environ["LLM_BASE_URL"].rstrip("/") + "/chat/completions"
    with _client.stream("POST", url, json=request, headers={"Authorization": "Bearer bench"}) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            for choice in json.loads(line[6:]).get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield b"event: token\ndata: " + json.dumps({"text": text}).encode() + b"\n\n"
    yield b"event: done\ndata: {}\n\n"


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = json.loads(environ["wsgi.input"].read(length) or b"{}")
    if path == "/api/conversations":  # the bench creates a conversation before each sample
        start_response("201 Created", [("Content-Type", "application/json")])
        return [b'{"id": 0}']
    start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
    return _relay(str(body.get("content", "")))
