"""``vms bench NAME``: the benchmarks' arguments, and the run of the one named.

:mod:`vms.cli` loads this module by name, for ``vms bench`` only, so the server and the rest of
the command line import no benchmark (see the import contracts in pyproject.toml).
"""

from __future__ import annotations

import argparse
import sys

from vms.bench.report import Progress, emit


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vms bench")
    p.add_argument(
        "name", choices=["recording", "crash", "api", "seek", "live", "viewers", "detect"]
    )
    p.add_argument("--quick", action="store_true", help="small run, under 50 s")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.add_argument("--cameras", type=int, help="override the number of cameras")
    p.add_argument("--seconds", type=float, help="override the run length")
    p.add_argument("--no-peer", action="store_true", help="skip the ffmpeg peer run")
    p.add_argument(
        "--peer-cameras",
        type=int,
        help="recording: ffmpeg processes in the peer run (at most --cameras; 40 by default)",
    )
    p.add_argument(
        "--slow-root",
        action="store_true",
        help="recording: a tenth of the cameras on a storage root whose every write and sync "
        "takes 2 s; the others must lose nothing",
    )
    p.add_argument("--clients", type=int, help="api: concurrent clients (50 quick, 200 full)")
    p.add_argument("--kills", type=int, help="crash: number of kill -9 (50 quick, 500 full)")
    p.add_argument("--hours", type=float, help="seek: archive length per camera (1 quick, 24 full)")
    p.add_argument("--instants", type=int, help="seek: random instants played (40 quick, 200 full)")
    p.add_argument(
        "--data-dir",
        help="seek: write the archive here and keep it; a later run with the same cameras and "
        "hours reuses it",
    )
    p.add_argument(
        "--protocols",
        help="live, viewers: the protocols to measure, comma-separated (default: all of them)",
    )
    p.add_argument(
        "--viewers",
        help="viewers: the steps of the ramp, comma-separated (100 quick; 100,250,500,1000)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    """Run one benchmark; prints the result. Exit status 0 when its target is met, else 1."""
    progress = Progress(enabled=not args.json)
    if args.name == "recording":
        from vms.bench import recording

        result = recording.run(args, progress)
    elif args.name == "crash":
        from vms.bench import crash

        result = crash.run(args, progress)
    elif args.name == "api":
        from vms.bench import api

        result = api.run(args, progress)
    elif args.name == "seek":
        from vms.bench import seek

        result = seek.run(args, progress)
    elif args.name == "live":
        from vms.bench import live

        result = live.run(args, progress)
    elif args.name == "viewers":
        from vms.bench import viewers

        result = viewers.run(args, progress)
    elif args.name == "detect":
        from vms.bench import detect

        result = detect.run(args, progress)
    else:
        print(f"vms: no benchmark {args.name!r}", file=sys.stderr)
        return 2
    progress.done()
    emit(result, args.json)
    return 0 if result["ok"] else 1
