"""Playback over HTTP through the running app: the plan, the range stream with byte ranges,
the stored segment files, the guard and the audit trail. The recordings were made by the real
recorder before the server started (frames numbered, 4 s GOP, segments of 8 s); one camera
records a clip live while the tests run, for the open segment."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import START_US, make_rig
from tests.support.app import running_app
from tests.support.counter_clip import counter_clip, decode, record
from tests.support.polling import wait_for
from vms.auth.rbac import Action
from vms.auth.store import Grant
from vms.catalog.store import CLOSED, MAIN, Catalog, Segment
from vms.config import from_dict
from vms.recording import mp4
from vms.server import Server
from vms.times import iso

PASSWORD = "a long enough password"
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1}
# Cameras recorded before the server starts: cam1 (30 s) and cam2 are only read; cam3 and cam4
# each belong to one test that damages its recordings.
RECORDED = {"cam1": 750, "cam2": 200, "cam3": 500, "cam4": 500}
DEAD = "rtsp://127.0.0.1:9/x"

Site = tuple[TestClient, Server]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Path]) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("playback-api")
    data = tmp / "data"
    catalog = Catalog(f"sqlite:///{data / 'catalog.db'}")
    for cam, frames in RECORDED.items():
        clip = counter_clip(tmp / f"{cam}.mp4", frames=frames)
        rig = make_rig(tmp, catalog, segment_seconds=6, camera=cam)
        try:
            record(rig, clip)
        finally:
            rig.writers.stop()
    catalog.close()
    cams: list[dict[str, Any]] = [{"id": c, "enabled": False, "main": {"url": DEAD}}
                                  for c in RECORDED]  # fmt: skip
    cams.append({"id": "live", "main": {"url": clips["h264"].as_uri()}})
    cfg = from_dict({
        "data_dir": str(data),
        "storage": {"roots": [{"name": "r1", "path": str(tmp / "root"), "min_free_bytes": 0}]},
        "recording": {"segment_seconds": 4},
        "auth": FAST,
        "cameras": cams,
    })  # fmt: skip
    with running_app(cfg) as running:
        yield running


def at(seconds: float) -> str:
    return iso(START_US + int(seconds * 1e6))


def url(camera: str, start: float, end: float, what: str = "playback.mp4", **more: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"start": at(start), "end": at(end), **more}.items())
    return f"/api/v1/cameras/{camera}/{what}?{query}"


def segments(server: Server, camera: str) -> list[Segment]:
    return server.catalog.segments(camera_id=camera)


def user(site: Site, name: str, role: str, grants: dict[str, list[str] | None]) -> TestClient:
    """A client logged in as a new user with ``grants`` (camera → actions, None: the role's)."""
    client, server = site
    uid = server.auth.add_user(name, PASSWORD, role).id
    server.auth.store.set_grants(
        uid, [Grant(c, None if a is None else frozenset(Action(x) for x in a))
              for c, a in grants.items()],
    )  # fmt: skip
    r = client.post("/api/v1/auth/login", json={"name": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return TestClient(client.app, headers={"Authorization": f"Bearer {r.json()['access_token']}"})


def test_the_plan_says_where_output_time_0_and_the_instant_are(site: Site) -> None:
    client, server = site
    r = client.get(url("cam1", 5.5, 21, "playback"))
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["first"] == at(4) and plan["first_us"] == START_US + 4_000_000
    assert plan["offset_s"] == 1.5
    assert (
        plan["mime"].startswith('video/mp4; codecs="avc1.') and plan["video_mime"] == plan["mime"]
    )
    (run,) = plan["runs"]
    assert (run["width"], run["height"], run["codec"]) == (160, 120, "h264")
    assert run["codecs"].startswith("avc1.") and run["output_start_s"] == 0
    segs = segments(server, "cam1")
    assert [p["segment"] for p in plan["pieces"]] == [s.id for s in segs[:3]]
    assert [p["output_start_s"] for p in plan["pieces"]] == [0, 4, 12]
    assert plan["pieces"][1]["start"] == at(8) and plan["gaps"] == []
    body = client.get(url("cam1", 5.5, 21)).content
    assert plan["total_bytes"] == len(body)


def test_the_stream_starts_at_a_keyframe_and_says_where_to_seek(site: Site) -> None:
    client, _ = site
    r = client.get(url("cam1", 13.3, 20))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4"
    assert r.headers["x-playback-first"] == at(12)
    assert r.headers["x-playback-offset"] == "1.300000"
    assert r.headers["accept-ranges"] == "bytes"
    frames = decode(r.content)
    assert frames[0][1] == 300, "from the keyframe at 12 s"
    shown = next(n for pts, n, _, _ in frames if pts >= 1.3 - 1e-6)
    assert abs(shown * 0.04 - 13.3) <= 0.04 + 1e-9
    assert frames[-1][1] == 499, "to the end of the fragment holding the end"


def test_byte_ranges_are_parts_of_the_one_stream(site: Site) -> None:
    client, _ = site
    whole = client.get(url("cam1", 0, 30)).content
    size = len(whole)
    parts = []
    a, b = size // 3, 2 * size // 3
    for spec in (f"bytes=0-{a - 1}", f"bytes={a}-{b - 1}", f"bytes={b}-{size + 50}"):
        r = client.get(url("cam1", 0, 30), headers={"Range": spec})
        assert r.status_code == 206, (spec, r.text[:200])
        assert r.headers["content-length"] == str(len(r.content))
        assert r.headers["content-range"].endswith(f"/{size}")
        parts.append(r.content)
    assert b"".join(parts) == whole
    tail = client.get(url("cam1", 0, 30), headers={"Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == whole[-500:]
    assert tail.headers["content-range"] == f"bytes {size - 500}-{size - 1}/{size}"
    past = client.get(url("cam1", 0, 30), headers={"Range": f"bytes={size}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"
    assert past.json()["error"] == "invalid_argument"
    several = client.get(url("cam1", 0, 30), headers={"Range": "bytes=0-1,5-9"})
    assert several.status_code == 200 and several.content == whole, "not one range: ignored"
    trick = client.get(url("cam1", 0, 30, keyframes="reverse"), headers={"Range": "bytes=0-9"})
    assert trick.status_code == 200 and trick.headers["accept-ranges"] == "none"
    assert [n for _, n, _, _ in decode(trick.content)] == list(range(700, -1, -100))


def test_video_only_and_trick_play_over_http(site: Site) -> None:
    client, _ = site
    r = client.get(url("cam1", 4, 20, keyframes="forward"))
    assert r.status_code == 200
    assert [n for _, n, _, _ in decode(r.content)] == [100, 200, 300, 400]
    r = client.get(url("cam1", 4, 8, audio="0"))
    assert r.status_code == 200 and len(decode(r.content)) == 100


def test_a_segment_file_is_served_as_stored_to_its_own_camera_only(site: Site) -> None:
    client, server = site
    seg = segments(server, "cam1")[1]
    stored = (Path(server.storage.by_id(seg.root_id).path) / seg.path).read_bytes()
    r = client.get(f"/api/v1/cameras/cam1/segments/{seg.id}.mp4")
    assert r.status_code == 200 and r.content == stored
    assert r.headers["content-length"] == str(len(stored)) == str(seg.bytes)
    init = client.get(f"/api/v1/cameras/cam1/segments/{seg.id}.mp4",
                      headers={"Range": f"bytes=0-{seg.init_bytes - 1}"})  # fmt: skip
    assert init.status_code == 206 and init.content == stored[: seg.init_bytes]
    other = segments(server, "cam2")[0]
    r = client.get(f"/api/v1/cameras/cam1/segments/{other.id}.mp4")
    assert r.status_code == 404 and r.json()["message"] == f"no segment {other.id} of camera cam1"
    assert client.get("/api/v1/cameras/cam1/segments/999999.mp4").status_code == 404
    assert client.get("/api/v1/cameras/cam1/segments/x.mp4").status_code == 400


def test_a_quarantined_segment_is_a_gap_and_not_served(site: Site) -> None:
    client, server = site
    segs = segments(server, "cam4")
    assert server.catalog.quarantine(segs[1].id)
    assert client.get(f"/api/v1/cameras/cam4/segments/{segs[1].id}.mp4").status_code == 404
    plan = client.get(url("cam4", 0, 20, "playback")).json()
    assert [g["reason"] for g in plan["gaps"]] == ["quarantined"]
    assert [p["segment"] for p in plan["pieces"]] == [segs[0].id, segs[2].id]
    frames = decode(b"".join(_split_runs(client.get(url("cam4", 0, 20)).content)[:1]))
    assert frames[-1][1] == 199


def _split_runs(data: bytes) -> list[bytes]:
    starts = [b.offset for b in mp4.iter_boxes(data) if b.kind == b"ftyp"]
    return [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]


def test_a_corrupt_fragment_is_skipped_not_a_500(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    client, server = site
    seg = segments(server, "cam3")[1]
    path = Path(server.storage.by_id(seg.root_id).path) / seg.path
    with open(path, "r+b") as f:
        f.seek(seg.init_bytes)  # the first moof of the segment from 8 s
        f.write(b"\x00" * 12)
    with caplog.at_level(logging.WARNING, logger="vms.playback.stream"):
        r = client.get(url("cam3", 0, 20))
    assert r.status_code == 200
    assert f"segment {seg.id}" in caplog.text
    numbers = [n for _, n, _, _ in decode(r.content)]
    assert numbers == [*range(0, 200), *range(400, 500)]


def test_the_open_segment_plays_as_far_as_it_is_written(site: Site) -> None:
    client, server = site
    snap = wait_for(lambda: _open_with(server, 2), 30, "two fragments of an open segment")
    start, end = iso(snap.start_us), iso(server.clock.wall_us() + 60_000_000)
    plan = client.get(f"/api/v1/cameras/live/playback?start={start}&end={end}")
    assert plan.status_code == 200, plan.text
    # It may have closed since (a rotation every 4 s), and a newer one opened: either way its
    # fragments are served, the open ones so marked.
    pieces = {p["segment"]: p["open"] for p in plan.json()["pieces"]}
    assert pieces[snap.id] or server.catalog.segment(snap.id).state == CLOSED
    r = client.get(f"/api/v1/cameras/live/playback.mp4?start={start}&end={end}")
    assert r.status_code == 200 and len(decode(r.content)) >= 50
    raw = client.get(f"/api/v1/cameras/live/segments/{snap.id}.mp4")
    assert raw.status_code == 200 and len(raw.content) >= snap.size
    kinds = [b.kind for b in mp4.iter_boxes(raw.content)]
    assert kinds[:2] == [b"ftyp", b"moov"] and len(kinds) % 2 == 0, "whole fragments only"


def _open_with(server: Server, fragments: int) -> Any:
    snap = server.writers.open_segment("live", MAIN)
    return snap if snap is not None and snap.id and snap.fragments >= fragments else None


def test_bad_ranges_answer_400_and_nothing_recorded_404(site: Site) -> None:
    client, _ = site
    r = client.get(url("cam1", 10, 5))
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "end"
    r = client.get(url("cam1", 0, 8 * 86_400, "playback"))
    assert r.status_code == 400 and "playback.max_range_days" in r.json()["message"]
    r = client.get(url("cam1", 3600, 3700))
    assert r.status_code == 404
    assert r.json()["message"] == f"no recordings of camera cam1 between {at(3600)} and {at(3700)}"
    r = client.get(url("cam1", 0, 10, strat="x"))
    assert r.status_code == 400 and r.json()["details"][0]["problem"] == "unknown parameter"
    assert client.get("/api/v1/cameras/cam1/playback.mp4?start=0").status_code == 400


def test_the_guard_and_media_tokens(site: Site) -> None:
    client, _ = site
    bare = TestClient(client.app)
    for what in ("playback", "playback.mp4"):
        assert bare.get(url("cam1", 0, 4, what)).status_code == 401
    assert bare.get("/api/v1/cameras/cam1/segments/1.mp4").status_code == 401
    viewer = user(site, "vera", "viewer", {"cam1": None})  # may view cam1, not play it back
    r = viewer.get(url("cam1", 0, 4))
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    operator = user(site, "otto", "operator", {"cam2": None})
    assert operator.get(url("cam1", 0, 4)).status_code == 404, "as if cam1 did not exist"
    assert operator.get(url("cam2", 0, 4)).status_code == 200
    token = operator.post(
        "/api/v1/auth/media-token", json={"camera_id": "cam2", "action": "playback"}
    ).json()["token"]
    r = bare.get(url("cam2", 0, 4, token=token))
    assert r.status_code == 200 and decode(r.content)[0][1] == 0
    assert bare.get(url("cam1", 0, 4, token=token)).status_code in (401, 404)


def test_one_audit_entry_per_range_not_per_byte_range(site: Site) -> None:
    _, server = site
    auditor = user(site, "audrey", "operator", {"cam1": None})
    for headers in ({}, {"Range": "bytes=0-99"}, {"Range": "bytes=100-"}):
        assert auditor.get(url("cam1", 1, 9), headers=headers).status_code in (200, 206)
    assert auditor.get(url("cam1", 2, 9)).status_code == 200
    seg = segments(server, "cam1")[0]
    for _ in range(2):
        assert auditor.get(f"/api/v1/cameras/cam1/segments/{seg.id}.mp4").status_code == 200
    entries = server.audit.query(actor="audrey", action="playback", limit=100)
    assert [(e.target, e.details["mode"], e.details["start"]) for e in entries] == [
        ("cam1", "stream", at(1)), ("cam1", "stream", at(2)),
        ("cam1", "segment", iso(seg.start_us))]  # fmt: skip
    assert entries[0].details == {"start": at(1), "end": at(9), "stream": "main", "mode": "stream"}
