"""``vms audit verify`` and ``vms audit list``: the audit trail from the command line.

Only argparse is loaded with the ``vms`` command; the catalog is opened when a subcommand runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = """\
The audit trail: who logged in, changed users, cameras or keys, watched or exported video.

  verify   check the hash chain and the signed checkpoints (docs/design/audit.md): finds an
           entry edited, removed, re-inserted, or the newest entries cut off. Reads every
           entry once: about 80,000 a second on SQLite (2 cores).
  list     show entries, newest last, filtered by time, actor, action prefix or target.

exit status of verify: 0 the trail is whole, 1 findings (each printed), 2 refused.
"""


def add_parser(sub: Any) -> None:
    """Adds ``audit`` to the ``vms`` command's subcommands ``sub``."""
    audit = sub.add_parser(
        "audit",
        help="verify the audit trail, list its entries",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmds = audit.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)
    verify = cmds.add_parser("verify", help="check the chain and the checkpoints")
    listing = cmds.add_parser("list", help="show entries")
    for p in (verify, listing):
        p.add_argument(
            "--config", type=Path, help="configuration file (default: the data directory ./data)"
        )
        p.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument("--since", help="µs since the epoch or ISO 8601 (naive means UTC)")
    listing.add_argument("--until", help="as --since; exclusive")
    listing.add_argument("--actor", help="user name, or system")
    listing.add_argument("--action", help="action or its prefix: camera, camera.update")
    listing.add_argument("--target", help="a camera id, user name, ...")
    listing.add_argument(
        "--limit", type=int, default=50, help="at most this many (1-1000; default 50): the "
        "newest, or with --since the first ones after it",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from vms import config as config_mod
    from vms.audit.log import AuditLog
    from vms.catalog.store import Catalog

    cfg = config_mod.load(args.config) if args.config else config_mod.Config()
    catalog = Catalog(cfg.catalog_url())
    try:
        audit = AuditLog(catalog, cfg.data_dir)
        if args.audit_command == "verify":
            return _verify(args, audit)
        return _list(args, audit)
    finally:
        catalog.close()


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty() and total:
        bar = "#" * (30 * done // total)
        print(f"\rverifying {done}/{total} [{bar:<30}]", end="", file=sys.stderr, flush=True)


def _verify(args: argparse.Namespace, audit: Any) -> int:
    import dataclasses

    report = audit.verify(progress=None if args.json else _progress)
    if args.json:
        out = dataclasses.asdict(report)
        out["ok"] = report.ok
        print(json.dumps(out))
        return 0 if report.ok else 1
    if sys.stderr.isatty():
        print(file=sys.stderr)
    first = f"{report.first_seq}..{report.head_seq}" if report.entries else "none"
    print(
        f"checked {report.entries} entr{'y' if report.entries == 1 else 'ies'} (seq {first}), "
        f"{report.checkpoints} checkpoint(s), the newest at seq {report.checkpoint_seq or '-'}"
    )
    for f in report.findings:
        print(f.text())
    if report.findings_left_out:
        print(f"... and {report.findings_left_out} more finding(s)")
    print("OK" if report.ok else "THE AUDIT TRAIL WAS TAMPERED WITH (or damaged)")
    return 0 if report.ok else 1


def _list(args: argparse.Namespace, audit: Any) -> int:
    from vms.audit.entry import to_dict
    from vms.times import iso, parse_time

    since = parse_time(args.since, None, "--since")
    until = parse_time(args.until, None, "--until")
    entries = audit.query(
        actor=args.actor, action=args.action, target=args.target, since_us=since,
        until_us=until, limit=args.limit, newest=since is None,
    )  # fmt: skip
    if args.json:
        print(json.dumps({"entries": [to_dict(e) for e in entries]}))
        return 0
    rows = [["SEQ", "TIME (UTC)", "ACTOR", "FROM", "ACTION", "TARGET", "DETAILS"]]
    for e in entries:
        details = json.dumps(e.details, ensure_ascii=False) if e.details else ""
        rows.append(
            [str(e.seq), iso(e.at_us)[:23] + "Z", e.actor, e.actor_ip or "-", e.action,
             e.target or "-", details]
        )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0
