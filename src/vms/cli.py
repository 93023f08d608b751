"""The ``vms`` command."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vms import __version__
from vms import config as config_mod
from vms.errors import Kind, VmsError

log = logging.getLogger("vms")

EXIT_USAGE = 2

DESCRIPTION = """\
vms records IP cameras into crash-safe fragmented MP4 segments with an index.

commands:
  serve    record every configured camera and serve the HTTP API
  status   show cameras (health, fps, bitrate, last frame) and storage of a running server
  check    verify that the catalog and the segment files agree (--repair to fix)
  audit    verify the audit trail (tamper-evident), list its entries
  export   export a time range of cameras as MP4 with a signed manifest
  verify   check an export's signature and files
  user     add a user (the first admin: vms user add NAME --admin)
  bench    run a benchmark: recording, crash, api, seek

examples:
  vms serve --demo                     demo cameras, no network needed, http://127.0.0.1:8080
  vms serve --config vms.yaml
  vms status
  vms check --config vms.yaml --repair
  vms audit verify --config vms.yaml
  vms export --camera door --start 2026-11-26T10:00:00 --end 2026-11-26T10:05:00
  vms verify export-1f2e3d4c5b6a7988/
  vms bench recording --quick
"""


CHECK_DESCRIPTION = """\
Verify that the catalog and the segment files agree. Each level does what the one before does:

  catalog  rows only: each closed row's fragment index adds up to its fragments and bytes, and
           no two segments of a camera stream overlap. Reads the catalog and no file: about
           17,000 rows a second (a 200-camera month, 8.6 M rows, in under 10 minutes).
  files    (default) + every file exists, is as long as its index, has a moof and mdat at every
           indexed offset; files no row names. An open, a stat and two 8-byte reads per
           fragment: about 120 small reads per minute of video, a seek each on a cold disk.
  full     + the CRC-32 of every closed file. Reads every byte: a 200-camera month is about
           130 TB, days at a disk's sequential speed.

A segment whose CRC-32 does not match is quarantined (kept, no longer served, deleted by
retention like any other), never re-indexed. Without --repair nothing else is written, and a
check may run while the server records. --repair (recover what a crash left, truncate extra
bytes, re-index from the file, drop rows whose file is gone) needs the data directory to itself.

exit status: 0 all agree (quarantined segments are listed), 1 problems found, 2 refused.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vms", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"vms {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="record cameras and serve the API")
    src = serve.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, help="YAML or TOML configuration file")
    src.add_argument("--demo", action="store_true", help="record built-in demo cameras")
    serve.add_argument("--data-dir", type=Path, default=Path("data"), help="state for --demo")
    serve.add_argument("--port", type=int, help="override the configured HTTP port")
    serve.add_argument(
        "--host",
        help="override the listen address (0.0.0.0: every interface; the API asks "
        "for credentials on every route but health and login)",
    )
    serve.add_argument("--log-format", choices=["text", "json"], help="override log format")

    status = sub.add_parser("status", help="show a running server's cameras and storage")
    status.add_argument("--url", default="http://127.0.0.1:8080", help="server address")
    status.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        help="the server's data directory, whose local API key authenticates this command "
        "(default ./data); or set VMS_API_KEY",
    )
    status.add_argument("--json", action="store_true", help="print the raw JSON")

    check = sub.add_parser(
        "check",
        help="verify catalog against segment files",
        description=CHECK_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--config", type=Path, required=True)
    check.add_argument(
        "--level",
        choices=["catalog", "files", "full"],
        default="files",
        help="how deep to look, and what it costs (below); default: files",
    )
    check.add_argument(
        "--repair",
        action="store_true",
        help="fix what is found (refused while a server holds the data directory)",
    )
    check.add_argument("--json", action="store_true", help="print one JSON report")
    check.add_argument(
        "--server-running",
        action="store_true",
        help="leave open segments alone (being written); found from the server's lock otherwise",
    )

    from vms.audit import cli as audit_cli  # argparse only; the catalog loads when it runs

    audit_cli.add_parser(sub)
    from vms.export import cli as export_cli

    export_cli.add_parsers(sub)
    user = sub.add_parser("user", help="manage users")
    user_sub = user.add_subparsers(dest="user_command", metavar="USER_COMMAND", required=True)
    add = user_sub.add_parser("add", help="add a user; the password is asked for")
    add.add_argument("name")
    add.add_argument("--config", type=Path, required=True)
    role = add.add_mutually_exclusive_group()
    role.add_argument("--admin", action="store_true", help="role admin")
    role.add_argument("--role", default="viewer", help="role (default viewer)")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )

    # Listed here for the help; its arguments are vms.bench.cli's (see main).
    sub.add_parser("bench", help="run a benchmark (see bench/README.md)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: Callable[[argparse.Namespace], int]
    if argv[:1] == ["bench"]:
        # Reached by name, and only for this command: nothing the server runs imports a
        # benchmark or a stand-in camera (import-linter's contracts in pyproject.toml).
        bench = importlib.import_module("vms.bench.cli")
        args = bench.parser().parse_args(argv[1:])
        command = bench.run
    else:
        args = _parser().parse_args(argv)
        commands = {
            "serve": _serve, "status": _status, "check": _check, "audit": _audit, "user": _user,
            "export": _export, "verify": _verify,
        }  # fmt: skip
        if args.command not in commands:
            _parser().print_help()
            return EXIT_USAGE
        command = commands[args.command]
    from vms import log as log_setup

    log_setup.setup("warning" if getattr(args, "json", False) else "info")
    try:
        return command(args)
    except VmsError as e:
        print(f"vms: {e}", file=sys.stderr)
        return EXIT_USAGE if e.kind in (Kind.INVALID_ARGUMENT, Kind.STORAGE_MISSING) else 1
    except KeyboardInterrupt:
        return 130


def _serve(args: argparse.Namespace) -> int:
    # Imported here: the server, the API and uvicorn take a while to load, and only serve needs
    # them. The demo (stand-in cameras) is loaded for --demo alone.
    from vms import serve

    if args.demo:
        from vms.demo import demo_config

        log.info("preparing demo cameras in %s", args.data_dir)
        cfg = demo_config(args.data_dir.resolve())
    else:
        cfg = config_mod.load(args.config)
    return serve.run(
        serve.override(cfg, port=args.port, log_format=args.log_format, host=args.host)
    )


def _audit(args: argparse.Namespace) -> int:
    from vms.audit import cli as audit_cli

    return audit_cli.run(args)


def _export(args: argparse.Namespace) -> int:
    from vms.export import cli as export_cli

    return export_cli.run_export(args)


def _verify(args: argparse.Namespace) -> int:
    from vms.export import cli as export_cli

    return export_cli.run_verify(args)


def _fetch(url: str, headers: dict[str, str]) -> Any:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        if e.code == 401:
            raise VmsError(
                Kind.UNAUTHENTICATED,
                f"{url} asks for credentials: run on the server's machine with --data-dir "
                "pointing at its data directory, or set VMS_API_KEY",
            ) from None
        raise VmsError(Kind.UNAVAILABLE, f"{url} answered {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        raise VmsError(Kind.UNAVAILABLE, f"no server at {url}: {getattr(e, 'reason', e)}") from None


def _cameras(base: str, headers: dict[str, str]) -> list[Any]:
    """Every camera, page after page."""
    out: list[Any] = []
    query = "limit=1000"
    while True:
        page = _fetch(f"{base}/api/v1/cameras?{query}", headers)
        out += page["items"]
        if not page["next"]:
            return out
        query = "limit=1000&cursor=" + urllib.parse.quote(page["next"], safe="")


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 1:
        return "now"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _status(args: argparse.Namespace) -> int:
    from vms.auth import local

    base = args.url.rstrip("/")
    key = os.environ.get("VMS_API_KEY")
    headers = {local.HEADER: key} if key else local.headers(args.data_dir)
    cams = _cameras(base, headers)
    roots = _fetch(base + "/api/v1/storage", headers)["roots"]
    if args.json:
        print(json.dumps({"cameras": cams, "roots": roots}, indent=2))
        return 0
    rows = [["CAMERA", "STATE", "VIDEO", "FPS", "BITRATE", "LAST FRAME", "RECORDED", "ERROR"]]
    for c in cams:
        h = c["health"]
        video = f"{h['codec']} {h['width']}x{h['height']}" if h["codec"] else "-"
        rec = c["recording"]
        rows.append(
            [
                c["id"],
                h["state"].upper(),
                video,
                f"{h['fps']:.1f}",
                f"{h['bitrate_bps'] / 1e6:.2f} Mb/s",
                _ago(h["seconds_since_frame"]),
                _size(rec["bytes_written"]) if rec else "off",
                (h["last_error"] or "") if h["state"] != "online" else "",
            ]
        )
    print(_table(rows))
    print()
    rrows = [["STORAGE", "STATE", "USED", "QUOTA", "FREE", "PATH"]]
    for r in roots:
        rrows.append(
            [
                r["name"],
                f"REFUSED: {r['error']}"
                if not r["usable"]
                else (f"DEGRADED: {r['warning']}" if r.get("warning") else "OK"),
                _size(r.get("bytes_used")),
                _size(r.get("max_bytes")) if r.get("max_bytes") else "-",
                _size(r.get("bytes_free")),
                r["path"],
            ]
        )
    print(_table(rrows))
    return 0


def _check(args: argparse.Namespace) -> int:
    from vms.server import DataDirLock, server_holds

    cfg = config_mod.load(args.config)
    lock = DataDirLock(cfg.data_dir)
    server_running = args.server_running
    if args.repair:
        # Held for the whole repair, so no server starts recording into files being repaired.
        try:
            lock.acquire()
        except VmsError as e:
            print(f"vms: refusing to repair: {e}; stop the server first", file=sys.stderr)
            return EXIT_USAGE
    else:
        server_running = server_running or server_holds(cfg.data_dir)
    try:
        return _run_check(args, cfg, server_running)
    finally:
        lock.release()


def _run_check(args: argparse.Namespace, cfg: config_mod.Config, server_running: bool) -> int:
    import dataclasses

    from vms.catalog.store import Catalog
    from vms.clock import SystemClock
    from vms.recording import check
    from vms.recording.storage import Storage

    catalog = Catalog(cfg.catalog_url())
    storage = Storage(cfg.storage.roots, catalog, SystemClock())

    def progress(done: int, total: int) -> None:
        if not args.json and sys.stderr.isatty():
            bar = "#" * (30 * done // max(total, 1))
            print(f"\rchecking {done}/{total} [{bar:<30}]", end="", file=sys.stderr, flush=True)

    try:
        report = check.run(
            catalog, storage, level=args.level, repair=args.repair,
            server_running=server_running, progress=progress,
        )  # fmt: skip
    finally:
        catalog.close()
    if args.json:
        out = dataclasses.asdict(report)
        out["ok"] = report.ok
        print(json.dumps(out))
    else:
        if sys.stderr.isatty():
            print(file=sys.stderr)
        running = " (a server is running: open segments left alone)" if server_running else ""
        print(
            f"checked {report.segments} segment(s), {_size(report.bytes)} "
            f"at level {report.level}{running}"
        )
        if report.recovered:
            print(f"recovered {report.recovered} segment(s) left open or without a row")
        for root in report.refused_roots:
            print(f"REFUSED ROOT {root}")
        for p in report.problems:
            fixed = f" -> repaired: {p.repaired}" if p.repaired else ""
            print(f"{p.kind.upper():<13} {p.path}: {p.detail}{fixed}")
        if report.quarantined:
            print(f"{report.quarantined} quarantined segment(s): kept until retention deletes them")
        print(
            "OK"
            if report.ok
            else "PROBLEMS FOUND" + ("" if args.repair else " (run with --repair)")
        )
    return 0 if report.ok else 1


def _user(args: argparse.Namespace) -> int:
    import getpass

    from vms.auth import Auth
    from vms.catalog.store import Catalog

    cfg = config_mod.load(args.config)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise VmsError(Kind.INVALID_ARGUMENT, "the two passwords differ")
    catalog = Catalog(cfg.catalog_url())
    try:
        user = Auth(catalog, cfg).add_user(
            args.name, password, "admin" if args.admin else args.role
        )
    finally:
        catalog.close()
    print(f"user {user.name} added (id {user.id}, role {user.role})")
    return 0
