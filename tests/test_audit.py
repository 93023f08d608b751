"""The audit trail on SQLite and PostgreSQL: one unbroken chain under concurrent appends,
every kind of tampering found by verify, no secret ever recorded, the CLI and the API."""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from tests.conftest import START_US
from vms import metrics
from vms.api.audit import router
from vms.audit.checkpoint import CHECKPOINT_FILE, KEY_FILE
from vms.audit.entry import GENESIS, entry_hash
from vms.audit.log import AuditLog
from vms.audit.schema import audit_log
from vms.catalog.store import Catalog
from vms.clock import SimulatedClock
from vms.errors import Kind, VmsError

ROOT = Path(__file__).resolve().parents[1]


class Rig:
    def __init__(self, url: str, data_dir: Path, every: int = 10) -> None:
        self.url, self.data_dir = url, data_dir
        self.clock = SimulatedClock(START_US)
        self.catalog = Catalog(url)
        self.audit = AuditLog(self.catalog, data_dir, self.clock, checkpoint_every=every)

    def fill(self, n: int) -> None:
        for i in range(n):
            self.clock.advance(1)
            self.audit.append(
                "alice",
                "camera.update",
                f"cam{i % 3}",
                {"changed": ["name"], "i": i},
                ip="192.0.2.7",
            )

    def sql(self, statement: str, **params: Any) -> None:
        with self.catalog.engine.begin() as c:
            c.execute(sa.text(statement), params)

    def rows(self) -> list[Any]:
        with self.catalog.engine.connect() as c:
            return list(c.execute(sa.select(audit_log).order_by(audit_log.c.seq)))

    def findings(self) -> list[tuple[str, int | None]]:
        return [(f.kind, f.seq) for f in self.audit.verify().findings]


def _url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=["sqlite", "postgresql"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(_url(request.param, request, tmp_path), tmp_path / "data")
    yield r
    r.catalog.close()


def _rehash(rig: Rig, seq: int, prev_hash: str | None = None) -> str:
    """Recompute one row's hash after an edit, as an attacker who knows the format would."""
    row = next(r for r in rig.rows() if r.seq == seq)
    prev = row.prev_hash if prev_hash is None else prev_hash
    digest = entry_hash(
        row.seq, row.at_us, row.actor, row.actor_ip, row.action, row.target, row.details, prev
    )
    rig.sql(
        "UPDATE audit_log SET prev_hash = :p, hash = :h WHERE seq = :s", p=prev, h=digest, s=seq
    )
    return digest


# --- the chain -----------------------------------------------------------------------------


def test_many_appends_make_one_chain_with_checkpoints(rig: Rig) -> None:
    rig.fill(250)
    rows = rig.rows()
    assert [r.seq for r in rows] == list(range(1, 251))
    assert rows[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.hash
    report = rig.audit.verify()
    assert report.ok, report.findings
    assert (report.entries, report.first_seq, report.head_seq) == (250, 1, 250)
    assert report.head_hash == rows[-1].hash
    # A checkpoint every 10 entries, each line also in the application log's format.
    lines = (rig.data_dir / CHECKPOINT_FILE).read_text().splitlines()
    assert len(lines) == 25 and report.checkpoint_seq == 250
    assert lines[-1].startswith(f"audit checkpoint seq=250 head={rows[-1].hash} ")
    w = metrics._Writer()
    metrics.audit(w, rig.audit)
    text = w.text().decode()
    assert "vms_audit_head_seq 250\n" in text and "vms_audit_checkpoint_seq 250\n" in text
    key = rig.data_dir / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_size == 32


def test_query_filters_and_pages(rig: Rig) -> None:
    rig.fill(30)
    rig.audit.append("bob", "login.failed", "bob", {"method": "password", "reason": "bad_password"})
    rig.audit.append(
        "bob", "camera", "cam0"
    )  # "camera" is a prefix of camera.*, not of this one's peers
    rig.audit.append("bob", "cameras.list", "x")
    by_target = rig.audit.query(target="cam1", limit=1000)
    assert [e.details["i"] for e in by_target] == list(range(1, 30, 3))
    assert [e.action for e in rig.audit.query(actor="bob")] == [
        "login.failed",
        "camera",
        "cameras.list",
    ]
    assert len(rig.audit.query(action="camera")) == 31  # camera and camera.*, not cameras.list
    assert [e.action for e in rig.audit.query(action="login.")] == ["login.failed"]
    since = START_US + 10_000_000
    assert [e.seq for e in rig.audit.query(since_us=since, until_us=since + 3_000_000)] == [
        10,
        11,
        12,
    ]
    assert [e.seq for e in rig.audit.query(after_seq=28, limit=2)] == [29, 30]
    assert [e.seq for e in rig.audit.query(limit=2, newest=True)] == [32, 33]
    with pytest.raises(VmsError) as e:
        rig.audit.query(limit=0)
    assert e.value.kind == Kind.INVALID_ARGUMENT


def _hammer(audits: list[AuditLog], threads: int, each: int) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        try:
            start.wait()
            for i in range(each):
                audits[n % len(audits)].append(f"user{n}", "playback", f"cam{n}", {"i": i})
        except Exception as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


def test_concurrent_appends_keep_one_chain(rig: Rig) -> None:
    _hammer([rig.audit], threads=8, each=25)
    rows = rig.rows()
    assert [r.seq for r in rows] == list(range(1, 201))
    assert rig.audit.verify().ok


def test_two_processes_on_postgresql_keep_one_chain(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Two catalogs (two engines, as two processes would have) appending at once: the advisory
    lock serializes them across connections."""
    url = str(request.getfixturevalue("postgres_url"))
    a = Rig(url, tmp_path / "data")
    other = Catalog(url)
    b = AuditLog(other, tmp_path / "data", a.clock, checkpoint_every=10)
    try:
        _hammer([a.audit, b], threads=8, each=25)
        assert [r.seq for r in a.rows()] == list(range(1, 201))
        assert a.audit.verify().ok
    finally:
        other.close()
        a.catalog.close()


def test_two_processes_on_sqlite_keep_one_chain(tmp_path: Path) -> None:
    """Two catalogs on one SQLite file: each has its own writer lock, so they race; the one
    that loses the seq retries on top of the winner's entry."""
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    a = Rig(url, tmp_path / "data")
    other = Catalog(url)
    b = AuditLog(other, tmp_path / "data", a.clock, checkpoint_every=10)
    try:
        _hammer([a.audit, b], threads=4, each=25)
        assert [r.seq for r in a.rows()] == list(range(1, 101))
        assert a.audit.verify().ok
    finally:
        other.close()
        a.catalog.close()


# --- tampering -----------------------------------------------------------------------------


def test_an_edited_entry_is_found(rig: Rig) -> None:
    rig.fill(30)
    rig.sql("UPDATE audit_log SET details = :d WHERE seq = 12", d='{"changed":["enabled"],"i":11}')
    assert rig.findings() == [("edited", 12)]


def test_an_entry_edited_with_its_hash_is_found_by_the_next_link(rig: Rig) -> None:
    rig.fill(30)
    rig.sql("UPDATE audit_log SET actor = 'mallory' WHERE seq = 12")
    _rehash(rig, 12)
    assert rig.findings() == [("broken", 13)]


def test_a_chain_recomputed_from_an_edit_is_found_by_the_checkpoints(rig: Rig) -> None:
    rig.fill(30)  # checkpoints at 10, 20, 30
    rig.sql("UPDATE audit_log SET target = 'elsewhere' WHERE seq = 15")
    prev = None
    for seq in range(15, 31):
        prev = _rehash(rig, seq, prev)
    assert rig.findings() == [("rewritten", 20), ("rewritten", 30)]


def test_a_removed_middle_entry_is_found(rig: Rig) -> None:
    rig.fill(30)
    rig.sql("DELETE FROM audit_log WHERE seq IN (7, 8)")
    assert rig.findings() == [("removed", 9)]
    f = rig.audit.verify().findings[0]
    assert "7..8" in f.detail


def test_removed_newest_entries_are_found_as_truncation(rig: Rig) -> None:
    rig.fill(25)  # the newest checkpoint is at 20
    rig.sql("DELETE FROM audit_log WHERE seq > 17")
    assert rig.findings() == [("truncated", 20)]
    # Entries appended after the cut chain on seamlessly, and still the checkpoint knows.
    rig.audit.append("alice", "camera.update", "cam0")
    rig.audit.append("alice", "camera.update", "cam0")
    rig.audit.append("alice", "camera.update", "cam0")
    assert rig.findings() == [("rewritten", 20)]


def test_removed_oldest_entries_are_found_unless_pruned(rig: Rig) -> None:
    rig.fill(30)
    rig.sql("DELETE FROM audit_log WHERE seq <= 5")
    assert rig.findings() == [("removed", 6)]


def test_prune_keeps_the_log_verifiable(rig: Rig) -> None:
    rig.fill(30)
    assert rig.audit.prune(START_US + 11_000_000) == 10  # at_us of entries 1..10 is before
    rows = rig.rows()
    assert rows[0].seq == 11 and rows[-1].action == "audit.pruned"
    assert rows[-1].seq == 31 and json.loads(rows[-1].details)["through_seq"] == 10
    assert rig.audit.verify().ok
    assert rig.audit.prune(START_US) == 0


def test_a_forged_prune_entry_after_the_newest_checkpoint_proves_nothing(rig: Rig) -> None:
    rig.fill(30)
    row10 = next(r for r in rig.rows() if r.seq == 10)
    rig.sql("DELETE FROM audit_log WHERE seq <= 10")
    rig.audit.checkpoint_every = 1000  # no checkpoint after the forged entry
    rig.audit.append(
        "system", "audit.pruned", "", {"through_seq": 10, "through_hash": row10.hash, "entries": 10}
    )
    assert rig.findings() == [("removed", 11)]


def test_a_tampered_checkpoint_file_is_found(rig: Rig) -> None:
    rig.fill(30)
    path = rig.data_dir / CHECKPOINT_FILE
    lines = path.read_text().splitlines()
    # Moving the newest checkpoint back so that a truncation would pass: its MAC fails.
    lines[-1] = lines[-1].replace("seq=30 ", "seq=17 ")
    path.write_text("\n".join(lines) + "\n")
    kinds = rig.findings()
    assert kinds == [("checkpoint", None)]
    assert "line 3 (seq 17): the MAC does not match" in rig.audit.verify().findings[0].detail


def test_a_deleted_checkpoint_file_is_found(rig: Rig) -> None:
    rig.fill(30)
    (rig.data_dir / CHECKPOINT_FILE).unlink()
    assert rig.findings() == [("checkpoint", None)]


def test_checkpoints_also_come_with_time(tmp_path: Path) -> None:
    r = Rig(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "data", every=100)
    r.audit.append("alice", "login.ok", "alice")
    assert r.audit.maybe_checkpoint() is None  # not 60 s yet
    r.clock.advance(61)
    cp = r.audit.maybe_checkpoint()
    assert cp is not None and cp.seq == 1
    r.clock.advance(61)
    assert r.audit.maybe_checkpoint() is None  # nothing new
    assert r.audit.checkpoint_seq == 1 and r.audit.verify().ok
    # A new process reads where the checkpoints stand.
    again = AuditLog(r.catalog, tmp_path / "data", r.clock)
    assert again.checkpoint_seq == 1
    r.catalog.close()


# --- no secrets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "details",
    [
        {"password": "hunter2"},
        {"changes": {"camera": {"Password": "hunter2"}}},
        {"keys": [{"api_key": "k"}]},
        {"token": "t"},
        {"session_id": "s"},
        {"url": "rtsp://admin:hunter2@192.0.2.1/main"},
        {"bad": float("nan")},
    ],
)
def test_details_that_would_carry_a_secret_are_refused(rig: Rig, details: dict[str, Any]) -> None:
    with pytest.raises(VmsError) as e:
        rig.audit.append("alice", "camera.update", "door", details)
    assert e.value.kind == Kind.INVALID_ARGUMENT
    assert "hunter2" not in str(e.value)
    assert rig.rows() == []


def test_that_a_secret_changed_may_be_recorded(rig: Rig) -> None:
    e = rig.audit.append(
        "alice", "camera.update", "door", {"password_changed": True, "url": "rtsp://192.0.2.1/main"}
    )
    assert e.details == {"password_changed": True, "url": "rtsp://192.0.2.1/main"}
    with pytest.raises(VmsError):
        rig.audit.append("alice", "Camera Update", "door")


# --- the command line ----------------------------------------------------------------------


def _vms(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.run(
        [sys.executable, "-m", "vms", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_verify_exit_status_and_list(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (tmp_path / "vms.yaml").write_text(f"data_dir: {data}\n")
    r = Rig(f"sqlite:///{data / 'catalog.db'}", data)
    r.fill(25)
    ok = _vms("audit", "verify", "--config", "vms.yaml", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "checked 25 entries (seq 1..25)" in ok.stdout and ok.stdout.rstrip().endswith("OK")

    listed = _vms(
        "audit",
        "list",
        "--config",
        "vms.yaml",
        "--target",
        "cam1",
        "--limit",
        "2",
        "--json",
        cwd=tmp_path,
    )
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)["entries"]
    assert [e["seq"] for e in entries] == [20, 23]  # the newest two, oldest first
    assert entries[0]["at"].endswith("Z")
    table = _vms(
        "audit",
        "list",
        "--config",
        "vms.yaml",
        "--since",
        "2026-09-21T00:00:00",
        "--limit",
        "1",
        cwd=tmp_path,
    )
    assert table.stdout.splitlines()[0].startswith("SEQ") and "camera.update" in table.stdout

    r.sql("UPDATE audit_log SET target = 'other' WHERE seq = 3")
    r.sql("DELETE FROM audit_log WHERE seq = 9")
    bad = _vms("audit", "verify", "--config", "vms.yaml", cwd=tmp_path)
    assert bad.returncode == 1
    assert (
        "EDITED     seq 3:" in bad.stdout
        and "REMOVED    seq 10: entries 9 are missing" in bad.stdout
    )
    r.catalog.close()


# --- the API -------------------------------------------------------------------------------


class _Server:
    def __init__(self, audit: AuditLog | None) -> None:
        self.audit = audit


def _client(audit: AuditLog | None) -> TestClient:
    app = FastAPI()
    app.state.server = _Server(audit)

    @app.exception_handler(VmsError)
    async def _error(_: Request, exc: VmsError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.kind.http_status)

    app.include_router(router)
    return TestClient(app)


def test_api_lists_pages_and_verifies(rig: Rig) -> None:
    rig.fill(25)
    client = _client(rig.audit)
    seen: list[int] = []
    after: int | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"action": "camera", "limit": 10}
        if after is not None:
            params["after_seq"] = after
        body = client.get("/api/v1/audit", params=params).json()
        seen += [e["seq"] for e in body["entries"]]
        pages += 1
        after = body["next_after_seq"]
        if after is None:
            break
    assert seen == list(range(1, 26)) and pages == 3
    first = client.get("/api/v1/audit", params={"limit": 1}).json()["entries"][0]
    assert first["at"] == "2026-09-21T14:13:21.000000Z" and first["actor_ip"] == "192.0.2.7"
    assert first["at_us"] == START_US + 1_000_000
    assert first["details"] == {"changed": ["name"], "i": 0}
    since = client.get("/api/v1/audit", params={"since": "2026-09-21T14:13:44Z"}).json()
    assert [e["seq"] for e in since["entries"]] == [24, 25] and since["next_after_seq"] is None

    assert client.get("/api/v1/audit/verify").json()["ok"] is True
    rig.sql("DELETE FROM audit_log WHERE seq = 5")
    verdict = client.get("/api/v1/audit/verify").json()
    assert verdict["ok"] is False
    assert [(f["kind"], f["seq"]) for f in verdict["findings"]] == [("removed", 6)]


def test_api_refuses_bad_parameters_and_answers_503_without_a_log(rig: Rig) -> None:
    client = _client(rig.audit)
    assert client.get("/api/v1/audit", params={"limit": 0}).status_code == 422
    assert client.get("/api/v1/audit", params={"actr": "bob"}).status_code == 422
    bad = client.get("/api/v1/audit", params={"since": "yesterday"})
    assert bad.status_code == 400 and bad.json()["details"][0]["field"] == "since"
    assert _client(None).get("/api/v1/audit").status_code == 503
