"""Run an ASGI app under uvicorn and announce, on stdout, where it listens once it does."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that prints one line once its socket is bound (the real port, even for port 0)."""

    def __init__(self, config: uvicorn.Config, announce: Callable[[str, int], str]) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.started:
            return
        host, port = self.config.host, self.config.port
        for server in self.servers:
            for sock in server.sockets:
                port = int(sock.getsockname()[1])
                break
        print(self._announce(f"[{host}]" if ":" in host else host, port), flush=True)


def serve(app: ASGIApp, *, host: str, port: int, announce: Callable[[str, int], str], log_level: str = "info") -> None:
    """Serve ``app`` on ``host:port`` until interrupted; print ``announce(host, port)`` once listening.

    ``port`` may be 0: the line then carries the port the OS picked, which is how
    :mod:`demo.testing` finds the server without racing for a free port.
    """
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="auto")
    _AnnouncingServer(config, announce).run()
