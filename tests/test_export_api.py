"""The exports API over a real server (uvicorn, real HTTP) recording two file cameras: jobs,
downloads, the public key, refusals, permissions, the audit trail, and ``vms export`` /
``vms verify`` run as commands against it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import av
import httpx
import pytest

from tests.support.browser import served_app
from tests.support.polling import wait_for
from tests.test_export import FullDisk
from vms.auth import local
from vms.auth.rbac import Action
from vms.auth.store import Grant
from vms.config import from_dict
from vms.export import signing
from vms.export.jobs import FINISHED, JOB_FILE, Files, State
from vms.export.manifest import MANIFEST, SIGNATURE, ZIP_NAME
from vms.recording import mp4
from vms.server import Server
from vms.times import iso

ROOT = Path(__file__).resolve().parents[1]
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1}
PASSWORD = "a long enough password"
SECOND = 1_000_000


class Site:
    def __init__(self, url: str, server: Server, data_dir: Path) -> None:
        self.url, self.server, self.data_dir = url, server, data_dir
        self.admin = httpx.Client(base_url=url, headers=local.headers(data_dir), timeout=30)
        first = server.catalog.segments(camera_id="a", state=1)[0]
        self.start_us = first.start_us + SECOND // 2
        self.end_us = self.start_us + 2 * SECOND

    def range(self, **more: Any) -> dict[str, Any]:
        return {"start": iso(self.start_us), "end": iso(self.end_us)} | more

    def user(self, name: str, grants: list[Grant]) -> tuple[httpx.Client, int]:
        auth = self.server.auth
        user = auth.add_user(name, PASSWORD, "operator")
        auth.store.set_grants(user.id, grants)
        r = self.admin.post("/api/v1/auth/login", json={"name": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, headers=headers), user.id

    def done(self, client: httpx.Client, job_id: str) -> dict[str, Any]:
        def ended() -> dict[str, Any] | None:
            job: dict[str, Any] = client.get(f"/api/v1/exports/{job_id}").json()
            return job if job["state"] in FINISHED else None

        result: dict[str, Any] = wait_for(ended, 60, f"export {job_id} to end")
        return result

    def audit(self, action: str, target: str) -> list[Any]:
        return self.server.audit.query(action=action, target=target)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Path]) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("export-api")
    (tmp / "r1").mkdir()
    cfg = from_dict(
        {
            "data_dir": str(tmp / "data"),
            "recording": {"segment_seconds": 2},
            "storage": {"roots": [{"name": "r1", "path": str(tmp / "r1"), "min_free_bytes": 0}]},
            "auth": FAST,
            "export": {"concurrent": 2, "max_range_hours": 1},
            "cameras": [{"id": c, "main": {"url": clips["h264"].as_uri()}} for c in ("a", "b")],
        }
    )
    with served_app(cfg) as (url, server):

        def recorded() -> bool:
            return all(len(server.catalog.segments(camera_id=c, state=1)) >= 2 for c in "ab")

        wait_for(recorded, 30, "two closed segments of each camera")
        yield Site(url, server, tmp / "data")


def vms(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    env.pop("VMS_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "vms", *args], env=env, capture_output=True, text=True, timeout=90
    )


def test_an_export_is_made_followed_downloaded_checked_and_deleted(site: Site) -> None:
    r = site.admin.post("/api/v1/exports", json=site.range(cameras=["a"]))
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert r.headers["location"] == f"/api/v1/exports/{job_id}"
    assert r.json()["state"] in ("queued", "running", "done") and r.json()["created_by"] == "local"
    job = site.done(site.admin, job_id)
    assert job["state"] == "done", job
    assert job["percent"] == 100 and job["file"] == "a.mp4"
    assert job["files"] == ["a.mp4", MANIFEST, SIGNATURE]
    assert job["download"] == f"/api/v1/exports/{job_id}/file"
    assert (job["start_us"], job["end_us"]) == (site.start_us, site.end_us)

    got = {}
    for name in job["files"]:
        r = site.admin.get(job["download"], params={"name": name})
        assert r.status_code == 200, r.text
        got[name] = r.content
    media = site.admin.get(job["download"])
    assert media.headers["content-type"] == "video/mp4" and media.content == got["a.mp4"]
    assert 'filename="a.mp4"' in media.headers["content-disposition"]
    assert len(got["a.mp4"]) == job["size"]
    kinds = [b.kind for b in mp4.iter_boxes(got["a.mp4"])]
    assert kinds.index(b"moov") < kinds.index(b"mdat")
    with av.open(io.BytesIO(got["a.mp4"]), "r") as c:
        assert c.start_time == 0
        frames = list(c.decode(video=0))
    assert frames[0].time == 0 and abs(len(frames) - 50) <= 1, len(frames)

    key = site.admin.get("/api/v1/exports/public-key").json()
    public = signing.load_public(key["public_key"].encode())
    assert signing.load_public(key["pem"].encode()) == public and key["algorithm"] == "Ed25519"
    assert signing.verify(public, got[MANIFEST], got[SIGNATURE])
    assert key["key_id"] == signing.key_id(public) in got[MANIFEST].decode()

    listed = site.admin.get("/api/v1/exports").json()["items"]
    assert job_id in [j["id"] for j in listed]
    (created,) = site.audit("export.created", job_id)
    assert created.actor == "local" and created.actor_ip == "127.0.0.1"
    assert created.details == {
        "cameras": ["a"], "start": iso(site.start_us), "end": iso(site.end_us), "stream": "main"
    }  # fmt: skip
    downloads = site.audit("export.downloaded", job_id)
    assert sorted(e.details["file"] for e in downloads) == sorted([*job["files"], "a.mp4"])

    assert site.admin.delete(f"/api/v1/exports/{job_id}").status_code == 204
    assert site.admin.get(f"/api/v1/exports/{job_id}").status_code == 404
    assert not (site.data_dir / "exports" / job_id).exists()
    assert len(site.audit("export.deleted", job_id)) == 1


def test_vms_export_downloads_a_zip_of_two_cameras_and_vms_verify_checks_it(
    site: Site, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    common = ["--url", site.url, "--data-dir", str(site.data_dir)]
    r = vms("export", "--camera", "a", "--camera", "b", "--start", iso(site.start_us),
            "--end", iso(site.end_us), "--out", str(out), *common)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([ZIP_NAME, MANIFEST, SIGNATURE])
    ok = vms("verify", str(out), "--data-dir", str(site.data_dir))
    assert ok.returncode == 0 and "2 file(s) intact" in ok.stdout, ok.stdout + ok.stderr
    key = site.admin.get("/api/v1/exports/public-key").json()["public_key"]
    assert vms("verify", str(out / ZIP_NAME), "--public-key", key).returncode == 0

    r = vms("export", "--camera", "a", "--start", iso(site.end_us), "--end",
            iso(site.start_us), *common)  # fmt: skip
    assert r.returncode == 2 and "end: must be after start" in r.stderr, r.stderr


def test_bad_requests_are_refused_and_make_no_job(site: Site) -> None:
    day_before = {"start": iso(site.start_us - 86_400 * SECOND),
                  "end": iso(site.start_us - 86_000 * SECOND)}  # fmt: skip
    cases = [
        (site.range(cameras=["a"], end=iso(site.start_us)), 400, "end: must be after start"),
        (site.range(cameras=["a"], end=iso(site.start_us + 3601 * SECOND)), 400, "at most 1 h"),
        (site.range(cameras=["a"], stream="third"), 400, "stream"),
        (site.range(cameras=["a"], start="yesterday"), 400, "start: not a time"),
        (site.range(cameras=["a"], strat="x"), 400, "unknown field"),
        (site.range(cameras=[]), 400, "cameras"),
        (site.range(cameras=["a", "a"]), 400, "different camera ids"),
        ({"cameras": ["a"], **day_before}, 404, "no recordings of camera a"),
        (site.range(cameras=["a", "nope"]), 404, "no recordings of camera nope"),
    ]
    before = len(site.server.exports.jobs())
    for body, status, message in cases:
        r = site.admin.post("/api/v1/exports", json=body)
        assert r.status_code == status and message in r.json()["message"], (body, r.text)
    assert len(site.server.exports.jobs()) == before
    assert site.admin.get("/api/v1/exports/nothere").status_code == 400
    assert site.admin.get("/api/v1/exports/0123456789abcdef").status_code == 404


def test_exporting_needs_export_on_every_camera_and_jobs_are_their_makers(site: Site) -> None:
    alice, alice_id = site.user("alice", [Grant("a", None)])
    assert alice.post("/api/v1/exports", json=site.range(cameras=["a", "b"])).status_code == 404
    view_only = frozenset({Action.VIEW, Action.PLAYBACK})
    site.server.auth.store.set_grants(alice_id, [Grant("a", None), Grant("b", view_only)])
    r = alice.post("/api/v1/exports", json=site.range(cameras=["a", "b"]))
    assert r.status_code == 403 and r.json()["message"] == "not permitted: export", r.text
    r = alice.post("/api/v1/exports", json=site.range(cameras=["a"]))
    assert r.status_code == 201, r.text
    job = site.done(alice, r.json()["id"])
    assert job["state"] == "done" and job["created_by"] == "alice"
    path = f"/api/v1/exports/{job['id']}"

    bob, _ = site.user("bob", [Grant("*", None)])
    assert bob.get(path).status_code == 404
    assert bob.get(f"{path}/file").status_code == 404
    assert bob.delete(path).status_code == 404
    assert job["id"] not in [j["id"] for j in bob.get("/api/v1/exports").json()["items"]]
    assert [j["id"] for j in alice.get("/api/v1/exports").json()["items"]] == [job["id"]]
    assert job["id"] in [j["id"] for j in site.admin.get("/api/v1/exports").json()["items"]]
    assert alice.get("/api/v1/exports/public-key").status_code == 200

    # A link without a header: a media token for export on the export's one camera.
    bare = httpx.Client(base_url=site.url)
    token = alice.post("/api/v1/auth/media-token", json={"camera_id": "a", "action": "export"})
    assert token.status_code == 200, token.text
    r = bare.get(f"{path}/file", params={"token": token.json()["token"]})
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    play = alice.post("/api/v1/auth/media-token", json={"camera_id": "a", "action": "playback"})
    assert bare.get(f"{path}/file", params={"token": play.json()["token"]}).status_code == 401
    assert bare.get(f"{path}/file").status_code == 401
    assert bare.get("/api/v1/exports/public-key").status_code == 401


class GatedFiles(Files):
    """Export files whose making waits for a gate (the file-writing edge)."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    def create(self, path: Path) -> BinaryIO:
        assert self.gate.wait(30), "the gate was never opened"
        return super().create(path)


def test_two_run_a_third_waits_cancel_stops_one_and_a_full_disk_fails_cleanly(
    site: Site,
) -> None:
    exports = site.server.exports
    gated = GatedFiles()
    exports.files = gated
    try:
        ids = []
        for _ in range(3):
            r = site.admin.post("/api/v1/exports", json=site.range(cameras=["b"]))
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])

        def states() -> list[str]:
            return [site.admin.get(f"/api/v1/exports/{i}").json()["state"] for i in ids]

        wait_for(lambda: states() == ["running", "running", "queued"], 30, "two running")
        answer: list[httpx.Response] = []
        cancel = threading.Thread(
            target=lambda: answer.append(site.admin.post(f"/api/v1/exports/{ids[0]}/cancel"))
        )
        cancel.start()
        wait_for(lambda: exports._runs[ids[0]].cancel.is_set(), 30, "the cancel asked")
        gated.gate.set()
        cancel.join(30)
        assert answer[0].status_code == 200 and answer[0].json()["state"] == "cancelled"
        assert [p.name for p in (exports.root / ids[0]).iterdir()] == [JOB_FILE]
        assert len(site.audit("export.cancelled", ids[0])) == 1
        assert [site.done(site.admin, i)["state"] for i in ids[1:]] == ["done", "done"]

        exports.files = FullDisk(40_000)
        r = site.admin.post("/api/v1/exports", json=site.range(cameras=["a"]))
        job = site.done(site.admin, r.json()["id"])
        assert job["state"] == State.FAILED and "no space left" in job["error"], job
        assert job["files"] == [] and job["download"] is None
        assert [p.name for p in (exports.root / job["id"]).iterdir()] == [JOB_FILE]
    finally:
        gated.gate.set()
        exports.files = Files()
    # Recording went on meanwhile.
    assert site.server.camera("a").recorder is not None
    newest = site.server.catalog.segments(camera_id="a")[-1]
    assert newest.start_us > site.end_us
