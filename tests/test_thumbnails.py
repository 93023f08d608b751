"""Thumbnails through the running app: the keyframe at or before an instant, decoded from the
segment files a real recorder wrote (a clip whose brightness steps every second, one keyframe
a second), scaled and encoded as JPEG; the cache; the strip; access; damaged fragments."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
from fastapi.testclient import TestClient

from tests.conftest import START_US, make_rig
from tests.support.app import running_app
from tests.support.polling import wait_for
from vms.auth.rbac import Action
from vms.auth.store import Grant
from vms.catalog.store import MAIN, Catalog
from vms.config import from_dict
from vms.ingest.pyav_source import read_clip
from vms.playback.thumbnail import Thumbnail, Thumbnails
from vms.recording import mp4
from vms.recording.segment import FragmentIndex
from vms.server import Server
from vms.times import iso

S = 1_000_000
SECONDS = 6
PASSWORD = "a long enough password"
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1}


def level(second: int) -> int:
    """The clip's luma (limited range) in its ``second``-th second."""
    return 40 + 30 * second


def stepped_clip(path: Path, seconds: int = SECONDS) -> Path:
    """320x240 H.264 at 25 fps, a keyframe a second, each second a flat grey of its own."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 320, 240, "yuv420p"
        v.options = {"g": "25", "keyint_min": "25", "sc_threshold": "0", "preset": "ultrafast"}
        for i in range(seconds * 25):
            frame = av.VideoFrame(320, 240, "yuv420p")
            y, u, w = frame.planes
            y.update(bytes([level(i // 25)]) * y.buffer_size)
            u.update(bytes([128]) * u.buffer_size)
            w.update(bytes([128]) * w.buffer_size)
            frame.pts, frame.time_base = i, Fraction(1, 25)
            for p in v.encode(frame):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
    return path


def picture(jpeg: bytes) -> tuple[int, int, float]:
    """Width, height and mean luma of a JPEG, in the clip's limited range."""
    with av.open(io.BytesIO(jpeg), "r", format="image2pipe") as c:
        frame = next(c.decode(video=0))
    plane = frame.planes[0]
    data = bytes(plane)
    total = sum(
        sum(data[r * plane.line_size : r * plane.line_size + frame.width])
        for r in range(frame.height)
    )
    full = total / (frame.width * frame.height)  # JPEG is full range: back to 16..235
    return frame.width, frame.height, 16 + full * 219 / 255


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Server]]:
    """Six seconds of ``cam1`` recorded in three 2 s segments from START_US (a recorder fed
    the clip's packets on a simulated clock), then the server over the same data directory;
    ``live`` records the clip in real time, its segment open for the test."""
    tmp = tmp_path_factory.mktemp("thumbs")
    clip = stepped_clip(tmp / "stepped.mp4")
    catalog = Catalog(f"sqlite:///{tmp / 'catalog.db'}")
    rig = make_rig(tmp, catalog, segment_seconds=2)
    info, packets = read_clip(clip)
    rig.recorder.stream_started(info)
    for p in packets:
        p.arrival = p.dts / info.video.timescale
        rig.recorder.packet(p)
    rig.stop()
    rig.writers.stop()
    assert len(catalog.segments(camera_id="cam1", state=1)) == 3
    catalog.close()
    dead = "rtsp://127.0.0.1:9/x"
    cfg = from_dict(
        {
            "data_dir": str(tmp),
            "recording": {"segment_seconds": 60},
            "storage": {"roots": [{"name": "r1", "path": str(tmp / "root"), "min_free_bytes": 0}]},
            "auth": FAST,
            "cameras": [
                {"id": "cam1", "main": {"url": dead}},
                {"id": "other", "main": {"url": dead}},
                {"id": "live", "main": {"url": clip.as_uri()}},
            ],
        }
    )
    with running_app(cfg) as running:
        yield running


def login(client: TestClient, server: Server, name: str, role: str, cameras: list[str]) -> str:
    if name not in {u.name for u in server.auth.store.users()}:
        user = server.auth.add_user(name, PASSWORD, role)
        server.auth.store.set_grants(user.id, [Grant(c, None) for c in cameras])
    r = client.post("/api/v1/auth/login", json={"name": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def url(at_us: int, **params: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"at": iso(at_us), **params}.items())
    return f"/api/v1/cameras/cam1/thumbnail.jpg?{query}"


def test_the_picture_is_the_keyframe_at_or_before_the_instant(
    app: tuple[TestClient, Server],
) -> None:
    client, _ = app
    cases = [  # (instant, the second whose keyframe shows)
        (START_US, 0), (START_US + S // 2, 0), (START_US + 2 * S - 1, 1),  # first segment
        (START_US + 2 * S, 2), (START_US + 3 * S + 700_000, 3),  # second, at its start
        (START_US + 6 * S - 1, 5),  # the last microsecond recorded
    ]  # fmt: skip
    for at_us, second in cases:
        r = client.get(url(at_us, width=160))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/jpeg"
        assert r.headers["x-thumbnail-time"] == iso(START_US + second * S), at_us
        assert r.headers["cache-control"] == "private, max-age=3600"
        w, h, luma = picture(r.content)
        assert (w, h) == (160, 120), "the width asked for, the aspect kept"
        assert luma == pytest.approx(level(second), abs=6), (at_us, second)
    w, h, _ = picture(client.get(url(START_US, width=1001)).content)
    assert (w, h) == (1000, 750), "made even, scaled up when asked"
    assert picture(client.get(url(START_US)).content)[:2] == (320, 240), "320 by default"


def test_a_picture_is_decoded_once_then_served_from_the_cache(
    app: tuple[TestClient, Server],
) -> None:
    client, server = app
    cache = server.thumbnails
    at = url(START_US + 4 * S + S // 3, width=200)
    decodes, hits = cache.decodes, cache.hits
    first = client.get(at)
    assert first.status_code == 200 and cache.decodes == decodes + 1
    # Another instant with the same keyframe is the same picture: no decode either.
    for again in (at, url(START_US + 4 * S + S // 2, width=200)):
        r = client.get(again)
        assert r.status_code == 200 and r.content == first.content
    assert cache.decodes == decodes + 1 and cache.hits == hits + 2


def test_requests_for_one_picture_at_once_make_it_once() -> None:
    cache = Thumbnails(2)
    gate, made = threading.Event(), []

    def make() -> Thumbnail:
        made.append(1)
        assert gate.wait(10)
        return Thumbnail(b"jpeg", 2, 2)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(cache.get, ("f", 1, 320), make) for _ in range(8)]
        wait_for(lambda: made, 10, "the first request to start making it")
        time.sleep(0.05)  # the others are queued on it (or not started yet: hits, either way)
        gate.set()
        assert {f.result(10).jpeg for f in futures} == {b"jpeg"}
    assert len(made) == 1 and cache.decodes == 1
    # Bounded: the least recently used goes.
    for i in range(3):
        cache.get(("g", i, 320), lambda: Thumbnail(b"x", 2, 2))
    assert len(cache) == 2


def test_nothing_recorded_is_404(app: tuple[TestClient, Server]) -> None:
    client, _ = app
    for at_us in (START_US - 1, START_US + 6 * S, START_US + 86_400 * S):
        r = client.get(url(at_us))
        assert r.status_code == 404, r.text
        assert r.json()["message"].startswith("no recording of camera cam1 (main) at ")
    r = client.get(url(START_US, stream="sub"))
    assert r.status_code == 404 and "(sub)" in r.json()["message"]
    assert client.get(f"/api/v1/cameras/nope/thumbnail.jpg?at={START_US}").status_code == 404


def test_bad_requests_are_400(app: tuple[TestClient, Server]) -> None:
    client, _ = app
    base = "/api/v1/cameras/cam1"
    for path in (
        f"{base}/thumbnail.jpg",  # no instant
        f"{base}/thumbnail.jpg?at=yesterday",
        f"{base}/thumbnail.jpg?at={START_US}&width=8",
        f"{base}/thumbnail.jpg?at={START_US}&width=4000",
        f"{base}/thumbnail.jpg?at={START_US}&stream=third",
        f"{base}/thumbnail.jpg?at={START_US}&wdith=100",  # unknown parameter
        f"{base}/thumbnails?start={START_US}",
        f"{base}/thumbnails?start={START_US}&end={START_US}",
        f"{base}/thumbnails?start={START_US}&end={START_US + 8 * 86_400 * S}",
        f"{base}/thumbnails?start={START_US}&end={START_US + S}&count=101",
        f"{base}/thumbnails?start={START_US}&end={START_US + S}&cuont=5",
    ):
        r = client.get(path)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"] == "invalid_argument"
    r = client.get(f"{base}/thumbnails?start={START_US}&end={START_US + 8 * 86_400 * S}")
    assert "longer than 7 days" in r.json()["message"]


def test_a_strip_names_the_pictures_of_its_instants(app: tuple[TestClient, Server]) -> None:
    client, server = app
    window = f"start={iso(START_US - 6 * S)}&end={iso(START_US + 6 * S)}&count=6&width=96"
    r = client.get(f"/api/v1/cameras/cam1/thumbnails?{window}")
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["at_us"] for i in items] == [START_US + (2 * k - 5) * S for k in range(6)]
    assert [i["recorded"] for i in items] == [False] * 3 + [True] * 3
    assert all(i["url"] is None for i in items[:3])
    # The local key sends a header: its URLs carry no token.
    assert all("token=" not in i["url"] for i in items[3:])
    for item, second in zip(items[3:], (1, 3, 5), strict=True):
        r = client.get(item["url"])
        assert r.status_code == 200
        assert picture(r.content)[2] == pytest.approx(level(second), abs=6)

    # A user's strip: URLs with a media token that a page's <img> fetches without a header.
    token = login(client, server, "strip-user", "operator", ["cam1"])
    user = TestClient(client.app, headers={"Authorization": f"Bearer {token}"})
    items = user.get(f"/api/v1/cameras/cam1/thumbnails?{window}").json()["items"]
    bare = TestClient(client.app)
    for item, second in zip(items[3:], (1, 3, 5), strict=True):
        assert "token=" in item["url"]
        r = bare.get(item["url"])
        assert r.status_code == 200, r.text
        assert picture(r.content)[2] == pytest.approx(level(second), abs=6)
    entries = client.get("/api/v1/audit", params={"limit": 1000}).json()["entries"]
    seen = {(e["actor"], e["action"], e["target"]) for e in entries}
    assert ("strip-user", "playback.thumbnails", "cam1") in seen
    assert ("strip-user", "playback.thumbnail", "cam1") in seen
    assert sum(e["actor"] == "strip-user" and e["action"] == "playback.thumbnail"
               for e in entries) == 1, "single pictures: once a minute"  # fmt: skip


def test_access(app: tuple[TestClient, Server]) -> None:
    client, server = app
    at = url(START_US + S)
    bare = TestClient(client.app)
    r = bare.get(at)
    assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
    token = login(client, server, "other-only", "operator", ["other"])
    other = TestClient(client.app, headers={"Authorization": f"Bearer {token}"})
    assert other.get(at).status_code == 404, "a camera she may not see does not exist for her"
    strip = f"/api/v1/cameras/cam1/thumbnails?start={START_US}&end={START_US + S}"
    assert other.get(strip).status_code == 404
    token = login(client, server, "viewer", "viewer", ["cam1"])
    viewer = TestClient(client.app, headers={"Authorization": f"Bearer {token}"})
    assert viewer.get(at).status_code == 403, "she sees the camera, may not play it back"
    token = login(client, server, "cam1-only", "operator", ["cam1"])
    user = TestClient(client.app, headers={"Authorization": f"Bearer {token}"})
    media = user.post(
        "/api/v1/auth/media-token", json={"camera_id": "cam1", "action": Action.PLAYBACK.value}
    ).json()["token"]
    assert bare.get(f"{at}&token={media}").status_code == 200
    r = bare.get(f"/api/v1/cameras/other/thumbnail.jpg?at={START_US}&token={media}")
    assert r.status_code == 401, "a media token is for its camera only"


def test_a_damaged_fragment_is_a_clear_404_not_a_500(
    app: tuple[TestClient, Server], caplog: pytest.LogCaptureFixture
) -> None:
    client, server = app
    (seg,) = [
        s for s in server.catalog.segments(camera_id="cam1") if s.start_us == START_US + 4 * S
    ]
    file = Path(server.config.storage.roots[0].path) / seg.path
    frag = next(FragmentIndex.decode(seg.frag_index or b"").fragments(seg.init_bytes))
    original = file.read_bytes()
    at = url(START_US + 4 * S + S // 4, width=64)  # a width no other test asks: not cached
    moof = next(mp4.iter_boxes(original, frag.offset))
    head, tail = original[: frag.offset], original[frag.offset + frag.size :]
    damages = [
        ("not one moof and one mdat", head + bytes(frag.size) + tail),  # a torn fragment
        ("does not decode",  # zeros for video
         original[: frag.offset + moof.size + 8] + bytes(frag.size - moof.size - 8) + tail),
        ("the file is shorter than its index", original[: frag.offset + frag.size // 2]),
        ("does not decode", bytes(seg.init_bytes) + original[seg.init_bytes :]),  # no init
    ]  # fmt: skip
    try:
        for why, data in damages:
            file.write_bytes(data)
            caplog.clear()
            r = client.get(at)
            assert r.status_code == 404, (why, r.status_code, r.text)
            message = r.json()["message"]
            assert "cannot be shown" in message and why in message, message
            assert any(why in rec.getMessage() and rec.levelname == "WARNING"
                       for rec in caplog.records), why  # fmt: skip
    finally:
        file.write_bytes(original)
    assert client.get(at).status_code == 200, "a failure is not kept: mended, it shows"


def test_the_open_segment_shows_as_far_as_it_is_written(app: tuple[TestClient, Server]) -> None:
    client, server = app

    def written() -> Any:
        snap = server.writers.open_segment("live", MAIN)
        return snap if snap is not None and snap.id is not None and snap.fragments >= 2 else None

    snap = wait_for(written, 30, "two fragments of the live camera's open segment")
    at = snap.end_us - 1
    r = client.get(f"/api/v1/cameras/live/thumbnail.jpg?at={at}&width=160")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "private, no-cache"
    shown = r.headers["x-thumbnail-time"]
    assert iso(snap.start_us) <= shown <= iso(at)
    assert picture(r.content)[:2] == (160, 120)
    # The timeline counts the open segment as far as it is written.
    t = client.get(
        f"/api/v1/timeline?cameras=live&start={snap.start_us}&end={snap.end_us}&buckets=2"
    ).json()
    (cam,) = t["cameras"]
    assert cam["runs"][0]["open"] and cam["runs"][0]["start_us"] == snap.start_us
    assert cam["recorded_s"] == pytest.approx((snap.end_us - snap.start_us) / S, abs=1e-6)
