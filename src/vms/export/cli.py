"""``vms export`` (ask a running server for an export and download it) and ``vms verify``
(check an export's signature and hashes, no server needed).

Only argparse is loaded with the ``vms`` command; the rest when a command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from vms.errors import Kind, VmsError

EXIT_OK, EXIT_TAMPERED, EXIT_USAGE = 0, 1, 2
POLL_S = 0.5
HTTP_TIMEOUT_S = 30

VERIFY_DESCRIPTION = """\
Check an export: the Ed25519 signature of manifest.json, then the size and SHA-256 of every
file it names. EXPORT is the export's folder, its export.zip, or its manifest.json.

The public key is the server's (from --data-dir, default ./data), or --public-key: a file
(PEM, or the raw 32 bytes) or the key in base64, as GET /api/v1/exports/public-key gives it.

exit status: 0 intact, 1 changed (each finding printed), 2 nothing to check or no key.
"""

EXPORT_DESCRIPTION = """\
Export a time range of one or more cameras from a running server as MP4 with a signed
manifest, and download it into --out (default ./export-<id>): <camera>.mp4 for one camera,
export.zip for several, with manifest.json and manifest.sig. Check it with vms verify.
"""


def add_parsers(sub: Any) -> None:
    """Adds ``export`` and ``verify`` to the ``vms`` command's subcommands ``sub``."""
    export = sub.add_parser(
        "export",
        help="export a time range of cameras as signed MP4",
        description=EXPORT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument(
        "--camera", action="append", required=True, metavar="ID", help="a camera (repeatable)"
    )
    export.add_argument("--start", required=True, help="µs since the epoch or ISO 8601 (UTC)")
    export.add_argument("--end", required=True, help="as --start")
    export.add_argument("--stream", choices=["main", "sub"], default="main")
    export.add_argument("--out", type=Path, help="folder to download into")
    export.add_argument("--url", default="http://127.0.0.1:8080", help="server address")
    export.add_argument(
        "--data-dir", type=Path, default=Path("data"),
        help="the server's data directory (its local API key); or set VMS_API_KEY",
    )  # fmt: skip

    verify = sub.add_parser(
        "verify",
        help="check an export's signature and files",
        description=VERIFY_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("export", type=Path, metavar="EXPORT")
    verify.add_argument("--public-key", metavar="KEY", help="a key file, or the key in base64")
    verify.add_argument(
        "--data-dir", type=Path, default=Path("data"),
        help="the server's data directory, whose signing key is used (default ./data)",
    )  # fmt: skip
    verify.add_argument("--json", action="store_true", help="print one JSON report")


# --- vms verify ----------------------------------------------------------------------------


def _public_key(args: argparse.Namespace) -> Any:
    from vms.export import signing

    if args.public_key:
        given = Path(args.public_key)
        try:
            text = given.read_bytes() if given.is_file() else args.public_key.encode()
        except OSError as e:
            raise VmsError(Kind.INVALID_ARGUMENT, f"--public-key {given}: {e.strerror}") from None
        return signing.load_public(text)
    try:
        return signing.Signer(args.data_dir, create=False).public
    except VmsError as e:
        raise VmsError(
            Kind.INVALID_ARGUMENT,
            f"{e.message}; give the server's public key with --public-key "
            "(GET /api/v1/exports/public-key)",
        ) from None


def run_verify(args: argparse.Namespace) -> int:
    from vms.export import signing
    from vms.export.verify import verify

    public = _public_key(args)
    report = None
    try:
        report = verify(args.export, public)
        findings = report.findings
    except VmsError as e:
        if e.kind != Kind.CORRUPT:
            raise
        findings = [e.message]
    if args.json:
        out = {"ok": not findings, "findings": findings, "key_id": signing.key_id(public),
               "files_checked": report.checked if report else 0}  # fmt: skip
        print(json.dumps(out))
    else:
        for f in findings:
            print(f"CHANGED {f}")
        if findings:
            print(f"TAMPERED: {len(findings)} finding(s) in {args.export}")
        else:
            assert report is not None and report.manifest is not None
            m = report.manifest
            print(
                f"OK: {args.export}: signature by key {signing.key_id(public)[:16]}…, "
                f"{report.checked} file(s) intact; exported by {m.get('exported_by')} at "
                f"{m.get('exported_at')}, {m.get('start')} to {m.get('end')}"
            )
    return EXIT_TAMPERED if findings else EXIT_OK


# --- vms export ----------------------------------------------------------------------------


class _Client:
    def __init__(self, args: argparse.Namespace) -> None:
        from vms.auth import local

        self.base = args.url.rstrip("/")
        key = os.environ.get("VMS_API_KEY")
        self.headers = {local.HEADER: key} if key else local.headers(args.data_dir)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data, headers, method=method)
        with self._open(req) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def download(self, path: str, to: Path) -> None:
        part = to.with_name(to.name + ".part")
        req = urllib.request.Request(self.base + path, headers=self.headers)
        with self._open(req) as r, open(part, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
        part.rename(to)

    def _open(self, req: urllib.request.Request) -> Any:
        try:
            return urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S)
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read())["message"]
            except (ValueError, KeyError, TypeError):
                message = f"answered {e.code}"
            if e.code == 401:
                message += (
                    ": run on the server's machine with --data-dir pointing at its data "
                    "directory, or set VMS_API_KEY"
                )
            kind = Kind.INVALID_ARGUMENT if e.code in (400, 403, 404, 409) else Kind.UNAVAILABLE
            raise VmsError(kind, f"{self.base}: {message}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise VmsError(Kind.UNAVAILABLE, f"no server at {self.base}: {reason}") from None


def _bar(job: dict[str, Any]) -> None:
    if not sys.stderr.isatty():
        return
    width = 30
    done = int(width * job["percent"] / 100)
    line = f"\rexport {job['id']} {job['state']:<9} [{'#' * done:<{width}}] {job['percent']:5.1f}%"
    print(line, end="", file=sys.stderr, flush=True)


def run_export(args: argparse.Namespace) -> int:
    client = _Client(args)
    body = {"cameras": args.camera, "start": args.start, "end": args.end, "stream": args.stream}
    job = client.request("POST", "/api/v1/exports", body)
    job_id = job["id"]
    path = f"/api/v1/exports/{urllib.parse.quote(job_id)}"
    print(f"export {job_id} {job['state']}", file=sys.stderr)
    try:
        while job["state"] in ("queued", "running"):
            _bar(job)
            time.sleep(POLL_S)
            job = client.request("GET", path)
    except KeyboardInterrupt:
        client.request("POST", f"{path}/cancel")
        print(f"\nexport {job_id} cancelled", file=sys.stderr)
        raise
    _bar(job)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if job["state"] != "done":
        print(f"vms: export {job_id} {job['state']}: {job.get('error') or ''}", file=sys.stderr)
        return 1
    out: Path = args.out or Path(f"export-{job_id}")
    out.mkdir(parents=True, exist_ok=True)
    for name in job["files"]:
        client.download(f"{path}/file?name={urllib.parse.quote(name)}", out / name)
    for note in job.get("notes") or []:
        print(f"note: {note}", file=sys.stderr)
    print(f"{out}: {', '.join(job['files'])}")
    return 0
