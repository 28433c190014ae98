"""Serving the app with uvicorn: in the foreground (`pusat api`) or in a thread (`pusat up`,
the tests), stopping cleanly even while live streams are open."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.state import ApiState
from pusat.settings import Settings

# Live streams never end by themselves: give open requests this long once asked to stop.
GRACEFUL_S = 3


class Server(uvicorn.Server):
    """uvicorn's server, which ends the live streams first when it shuts down."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app = self.config.app
        state = getattr(getattr(app, "state", None), "pusat", None)
        if isinstance(state, ApiState):
            state.hub.close_streams()
        await super().shutdown(sockets)


def config(app: FastAPI, settings: Settings, log_level: str = "warning") -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level=log_level.lower(),
        # X-Forwarded-For only from these (the proxy in front of the public side): the
        # client address the public rate limit counts. Never uvicorn's own environment.
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=GRACEFUL_S,
        lifespan="on",
        access_log=False,
    )


def serve(settings: Settings, log_level: str = "info") -> None:
    """Run until SIGINT/SIGTERM (uvicorn handles both in the main thread)."""
    app = create_app(settings)
    Server(config(app, settings, log_level)).run()


class ServerThread:
    """The API in a background thread; ``start()`` returns once it accepts connections."""

    def __init__(self, settings: Settings, log_level: str = "warning") -> None:
        self.app = create_app(settings)
        self.server = Server(config(self.app, settings, log_level))
        self.thread = threading.Thread(target=self.server.run, name="pusat-api", daemon=True)
        self.url = f"http://{settings.api_host}:{settings.api_port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the API did not start on {self.url}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the API did not start on {self.url} within {timeout} s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(GRACEFUL_S + 10)


@contextlib.contextmanager
def running(settings: Settings, log_level: str = "warning") -> Iterator[ServerThread]:
    server = ServerThread(settings, log_level).start()
    try:
        yield server
    finally:
        server.stop()
