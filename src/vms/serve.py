"""Run the app (:func:`vms.app.create_app`) under uvicorn: the body of ``vms serve``.

The command line (:mod:`vms.cli`) turns its arguments into a configuration and calls
:func:`run`; the benchmarks start their servers through the same function (a forked child, or
one with a slowed storage root) without importing the command line, which is the one module
that reaches the benchmarks.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from vms import config as config_mod
from vms import log as log_setup
from vms.app import create_app, server_of
from vms.config import Config
from vms.server import Server

log = logging.getLogger("vms")


def override(
    cfg: Config,
    port: int | None = None,
    log_format: str | None = None,
    host: str | None = None,
) -> Config:
    """``cfg`` with the server's port, log format and listen address replaced where given."""
    overrides = {"port": port, "log_format": log_format, "host": host}
    if all(v is None for v in overrides.values()):
        return cfg
    # Re-validate: model_copy(update=...) would keep plain strings where enums belong.
    fields = cfg.server.model_dump() | {k: v for k, v in overrides.items() if v is not None}
    return cfg.model_copy(update={"server": config_mod.ServerConfig.model_validate(fields)})


class _NoStartupTraceback(logging.Filter):
    """Trap: when the lifespan's startup raises, Starlette hands uvicorn the formatted
    traceback and uvicorn logs it as an error. A start refused for a reason the operator must
    fix (a missing disk, the data directory in use) is a :class:`~vms.errors.VmsError`, said
    once in one line; only a bug keeps its traceback."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__()
        self.app = app

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            server_of(self.app).start_error is not None and str(record.msg).startswith("Traceback")
        )


def run(cfg: Config, prepare: Callable[[Server], None] | None = None) -> int:
    """Record and serve until SIGTERM or SIGINT; 0 once every open segment is closed.

    ``prepare`` (benchmarks only) adjusts the server once its storage is built, before any
    reader starts. A failure to start (no usable storage root, the data directory in use) is
    raised as the :class:`~vms.errors.VmsError` it is, once uvicorn has given up.
    """
    log_setup.setup(cfg.server.log_level, cfg.server.log_format.value)
    app = create_app(cfg, prepare=prepare)
    logging.getLogger("uvicorn.error").addFilter(_NoStartupTraceback(app))
    host, port = cfg.server.host, cfg.server.port
    log.info("API on http://%s:%d once started (try: vms status --url http://%s:%d)",
             host, port, host, port)  # fmt: skip
    uv = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    )
    # uvicorn re-raises SIGTERM once it has shut down; with the default handler that would end
    # a clean stop with status -15. A no-op handler lets it return 0 (segments are closed).
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        asyncio.run(uv.serve())
    except SystemExit:
        # uvicorn exits (status 3) when the lifespan's startup failed: report the reason as
        # every other command does, with its own status.
        if server_of(app).start_error is None:
            raise
    error = server_of(app).start_error
    if error is not None:
        raise error
    return 0
