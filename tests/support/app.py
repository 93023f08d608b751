"""The whole application run as ``vms serve`` runs it: through ``create_app``'s lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from fastapi.testclient import TestClient

from vms.app import create_app, server_of
from vms.clock import Clock
from vms.config import Config
from vms.server import Server


@contextlib.contextmanager
def running_app(
    config: Config,
    *,
    prepare: Callable[[Server], None] | None = None,
    clock: Clock | None = None,
) -> Iterator[tuple[TestClient, Server]]:
    """Start the app (its lifespan starts the server on the client's event loop), yield a
    client and the server, and stop it all on exit (every open segment closed)."""
    app = create_app(config, clock=clock, prepare=prepare)
    with TestClient(app) as client:
        yield client, server_of(app)
