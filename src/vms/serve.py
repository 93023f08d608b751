"""Run a :class:`vms.server.Server` with its HTTP API under uvicorn: the body of ``vms serve``.

The command line (:mod:`vms.cli`) turns its arguments into a configuration and calls
:func:`run`; the benchmarks start their servers through the same function (a forked child, or
one with a slowed storage root) without importing the command line, which is the one module
that reaches the benchmarks.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from vms import config as config_mod
from vms import log as log_setup
from vms.api.routes import create_app
from vms.config import Config
from vms.server import Server

log = logging.getLogger("vms")


def override(cfg: Config, port: int | None = None, log_format: str | None = None) -> Config:
    """``cfg`` with the server's port and log format replaced where given."""
    overrides = {"port": port, "log_format": log_format}
    if all(v is None for v in overrides.values()):
        return cfg
    # Re-validate: model_copy(update=...) would keep plain strings where enums belong.
    fields = cfg.server.model_dump() | {k: v for k, v in overrides.items() if v is not None}
    return cfg.model_copy(update={"server": config_mod.ServerConfig.model_validate(fields)})


def run(cfg: Config, prepare: Callable[[Server], None] | None = None) -> int:
    """Record and serve until SIGTERM or SIGINT; 0 once every open segment is closed.

    ``prepare`` (benchmarks only) adjusts the server after it is built and before it starts.
    """
    log_setup.setup(cfg.server.log_level, cfg.server.log_format.value)
    server = Server(cfg)
    if prepare is not None:
        prepare(server)
    app = create_app(server)

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        server.start()
        log.info(
            "API on http://%s:%d (try: vms status --url http://%s:%d)",
            cfg.server.host,
            cfg.server.port,
            cfg.server.host,
            cfg.server.port,
        )
        try:
            yield
        finally:
            log.info("shutting down: closing open segments")
            await asyncio.to_thread(server.stop)
            log.info("stopped cleanly")

    app.router.lifespan_context = lifespan
    uv = uvicorn.Server(
        uvicorn.Config(
            app, host=cfg.server.host, port=cfg.server.port, log_config=None, access_log=False
        )
    )
    # uvicorn re-raises SIGTERM once it has shut down; with the default handler that would end
    # a clean stop with status -15. A no-op handler lets it return 0 (segments are closed).
    signal.signal(signal.SIGTERM, lambda *_: None)
    asyncio.run(uv.serve())
    return 0
