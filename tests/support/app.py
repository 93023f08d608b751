"""The whole application run as ``vms serve`` runs it: through ``create_app``'s lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from fastapi.testclient import TestClient

from vms.app import create_app, server_of
from vms.auth import local
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
    client and the server, and stop it all on exit (every open segment closed). The client
    authenticates as a local tool does, with the data directory's local API key."""
    app = create_app(config, clock=clock, prepare=prepare)
    with TestClient(app) as client:
        client.headers.update(local.headers(config.data_dir))
        yield client, server_of(app)
