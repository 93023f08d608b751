"""The composition root: ``create_app(config)`` is the whole VMS as one ASGI application.

Its lifespan is the one place that starts and stops everything: on startup it starts the
:class:`~vms.server.Server` (lock, catalog, storage, recovery, writers, cameras, retention) in
a worker thread, handing it the event loop that the cameras' relays deliver to; on shutdown it
stops it (every open segment closed and synced). Building the app does no I/O, so a test or a
tool can create it, and only entering its lifespan (``uvicorn``, or ``with TestClient(app)``)
touches the data directory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from vms.api.routes import create_api
from vms.clock import Clock
from vms.config import Config
from vms.errors import VmsError
from vms.server import Server

log = logging.getLogger(__name__)


def create_app(
    config: Config,
    *,
    clock: Clock | None = None,
    prepare: Callable[[Server], None] | None = None,
) -> FastAPI:
    """The application for ``config``. ``prepare`` (benchmark instruments only) adjusts the
    server once its storage is built and before its cameras start."""
    server = Server(config, clock)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(server.start, loop, prepare)
        except VmsError as e:
            server.start_error = e  # the web server only logs it: the cli reports it
            raise
        try:
            yield
        finally:
            log.info("shutting down: closing open segments")
            await asyncio.to_thread(server.stop)
            log.info("stopped cleanly")

    app = create_api(lifespan, config=config.server)
    app.state.server = server
    return app


def server_of(app: FastAPI) -> Server:
    """The server an app made by :func:`create_app` runs (tests and tools look inside it)."""
    server = app.state.server
    assert isinstance(server, Server)
    return server
