"""``vms serve`` with one storage root made slow: the fault ``vms bench recording --slow-root``
injects (every write and every sync of that root takes ``--delay`` seconds).

A benchmark instrument, run as ``python -m vms.bench.slow_serve --config … --slow-root NAME``;
the server itself has no such option.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from vms import serve
from vms.config import load
from vms.recording.segment import FileIO
from vms.server import Server


class SlowIO(FileIO):
    def __init__(self, delay: float) -> None:
        self.delay = delay

    def writev(self, fd: int, buffers: Sequence[bytes]) -> int:
        time.sleep(self.delay)
        return super().writev(fd, buffers)

    def fdatasync(self, fd: int) -> None:
        time.sleep(self.delay)
        super().fdatasync(fd)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m vms.bench.slow_serve")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--slow-root", required=True)
    p.add_argument("--delay", type=float, default=2.0)
    args = p.parse_args()

    def prepare(server: Server) -> None:
        for root in server.storage.roots:
            if root.name == args.slow_root:
                root.io = SlowIO(args.delay)

    return serve.run(load(args.config), prepare)


if __name__ == "__main__":
    raise SystemExit(main())
