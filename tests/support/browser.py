"""A real browser for the tests: Debian's Chromium driven by Playwright, and the app served by
uvicorn on a loopback port (a browser cannot talk to a TestClient).

Chromium is :func:`vms.bench.browser.chromium` (the benchmarks' launcher, re-exported). Pages
under test are served by the browser itself (``Page.route``) from the app's own origin, so
they reach the API without CORS, exactly as a page served by ``vms serve`` would.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from tests.support.polling import free_port, wait_for
from vms.app import create_app, server_of
from vms.bench.browser import chromium as chromium  # re-exported for the tests
from vms.config import Config
from vms.server import Server

VENDOR = Path(__file__).resolve().parents[2] / ".cache" / "vendor"
# For page.evaluate: the frames each Live wall tile (with a camera) has shown since the first
# call, counted by requestVideoFrameCallback, in the wall's order.
WALL_FRAMES = """() => [...document.querySelectorAll('#wall .tile:not(.tile-empty) video')]
  .map((v) => {
    if (!v.counting) {
      v.counting = true;
      v.frames = 0;
      const f = () => { v.frames++; v.requestVideoFrameCallback(f); };
      v.requestVideoFrameCallback(f);
    }
    return v.frames;
  })"""


def hls_js() -> bytes:
    """hls.js as ``./dev setup`` fetched it."""
    found = sorted(VENDOR.glob("hls.js-*/hls.min.js"))
    if not found:
        raise FileNotFoundError(f"no hls.js under {VENDOR}: run ./dev setup")
    return found[-1].read_bytes()


@contextlib.contextmanager
def served_app(config: Config, port: int | None = None) -> Iterator[tuple[str, Server]]:
    """The app under uvicorn on 127.0.0.1 (on ``port``, else a free one) in a thread of its
    own; yields its base URL and the server, and stops both (every open segment closed) on
    exit."""
    port = port or free_port()
    app = create_app(config)
    uv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                       lifespan="on")
    )  # fmt: skip
    uv.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            asyncio.run(uv.serve())
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    thread = threading.Thread(target=serve, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: uv.started or errors or not thread.is_alive(), 60, "uvicorn started")
        if errors or not uv.started:
            raise RuntimeError(f"the app did not start: {errors}")
        yield f"http://127.0.0.1:{port}", server_of(app)
    finally:
        uv.should_exit = True
        thread.join(60)
