"""Real footage to events, end to end: a stand-in RTSP camera plays the empty street, then
people walking (vtest.avi); the server finds them with the real model, tracks them, sees them
enter a zone, and the events reach the catalog, a subscriber on the local Mosquitto, a consumer
on the local NATS JetStream and a webhook receiver that checks the signature — while a camera
on a static scene raises nothing."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.brokers import Receiver, Subscriber, clear_retained, fetch, js_call
from tests.support.browser import served_app
from tests.support.polling import wait_for
from vms.config import from_dict
from vms.detect.models import model_dir
from vms.detection_config import DetectionConfig
from vms.errors import Kind, VmsError
from vms.events.model import Event
from vms.notify.webhook import verify
from vms.standin import StandinCamera, gstreamer_available
from vms.standin.footage import default_cache_dir, scene_frames

pytestmark = [
    pytest.mark.skipif(
        not gstreamer_available(), reason="GStreamer RTSP server (Debian packages) not installed"
    ),
    pytest.mark.serial,  # bounds the alert's delay after the people appear
]
SECRET = "webhook secret for the test"
STREET = [[0.0, 0.25], [1.0, 0.25], [1.0, 1.0], [0.0, 1.0]]  # where people walk in vtest


@pytest.fixture
def names() -> Iterator[tuple[str, str, str]]:
    tag = uuid.uuid4().hex[:10]
    mqtt_prefix, stream, subjects = f"vmstest/{tag}", f"VMSTEST_{tag}", f"vmstest{tag}"
    yield mqtt_prefix, stream, subjects
    clear_retained(mqtt_prefix)

    async def delete(js: Any) -> None:
        try:
            await js.delete_stream(stream)
        except Exception:  # noqa: BLE001 - a stream the run never created
            pass

    asyncio.run(js_call(delete))


def _config(tmp: Path, door: str, still: str, names: tuple[str, str, str], hook: str) -> Any:
    mqtt_prefix, stream, subjects = names
    detect = {"fps": 5, "zones": [{"name": "street", "polygon": STREET, "labels": ["person"]}]}
    return from_dict(
        {
            "data_dir": str(tmp / "data"),
            "storage": {"roots": [{"name": "r1", "path": str(tmp / "rec"), "create": True}]},
            "server": {"port": 0},
            "ingest": {"open_timeout_s": 5, "stall_timeout_s": 5, "backoff_initial_s": 0.2},
            "detection": {"threads": 1},
            "events": {
                "end_after_s": 1,
                "mqtt": {"enabled": True, "topic_prefix": mqtt_prefix,
                         "client_id": f"vms-{uuid.uuid4().hex[:8]}"},
                "nats": {"enabled": True, "stream": stream, "subject_prefix": subjects},
                "webhooks": [{"url": hook, "secret": SECRET}],
            },
            "cameras": [
                {"id": "door", "main": {"url": door}, "detect": detect},
                {"id": "still", "main": {"url": still}, "detect": detect},
            ],
        }
    )  # fmt: skip


def test_people_in_real_footage_become_events_on_every_channel(
    tmp_path: Path, names: tuple[str, str, str]
) -> None:
    if not (model_dir(DetectionConfig()) / "MobileNetSSD_deploy.caffemodel").is_file():
        pytest.fail("the detector's model is missing: ./dev setup fetches it")
    cache = default_cache_dir()
    scene = scene_frames(cache, 384, 288, empty_s=3.0)
    still_scene = scene_frames(cache, 384, 288, static=True)
    mqtt_prefix, stream, subjects = names
    hook = Receiver([204])
    sub = Subscriber(f"{mqtt_prefix}/#")
    try:
        with (
            StandinCamera(frames=scene, keyint=10) as door,
            StandinCamera(frames=still_scene, keyint=10) as still,
        ):
            config = _config(tmp_path, door.url, still.url, names, hook.url())
            with served_app(config) as (_base, server):
                started = time.time()
                mark = door.wait_mark(started - 60, timeout=60)

                def person_events() -> list[dict[str, Any]]:
                    out = []
                    for payload in sub.payloads(f"{mqtt_prefix}/events"):
                        m = json.loads(payload)
                        if m["after"]["camera"] == "door" and m["after"]["label"] == "person":
                            out.append(m)
                    return out

                wait_for(lambda: any(m["type"] == "new" for m in person_events()), 30,
                         "a person event on MQTT")  # fmt: skip
                first = next(m for m in person_events() if m["type"] == "new")
                delay = first["after"]["start_us"] / 1e6 - mark
                # The event's time is the first frame of the person's track: after the frame
                # that showed people entered the camera, within a few frames.
                assert -0.5 < delay < 6.0, delay
                wait_for(lambda: any("street" in m["after"]["zones"] for m in person_events()),
                         30, "a zone entry")  # fmt: skip
                wait_for(lambda: hook.requests, 30, "the webhook")
                wait_for(
                    lambda: sub.payloads(f"{mqtt_prefix}/door/motion")[-1:] == [b"ON"], 10,
                    "motion ON",
                )
                event_id = first["after"]["id"]

                def row() -> Event | None:
                    """The event's row, once the store's sink has written it (it is not
                    there yet when MQTT already has the event)."""
                    try:
                        return server.event_store.get(event_id)
                    except VmsError as e:
                        if e.kind != Kind.NOT_FOUND:
                            raise
                        return None

                stored = wait_for(row, 10, "the row")
                assert stored.label == "person" and stored.camera_id == "door"
                wait_for(
                    lambda: server.snapshots.path("door", event_id, box=True).is_file(), 10,
                    "the snapshot",
                )
                jpeg = server.snapshots.path("door", event_id, box=False).read_bytes()
                assert jpeg[:2] == b"\xff\xd8"
                def analysed(camera: str) -> int:
                    return int(server.detection.status()["cameras"][camera]["analysed"])

                wait_for(lambda: analysed("still") > 20, 30, "the static camera analysed")
                status = server.detection.status()
                assert status["cameras"]["door"]["detections"] > 0
                assert status["cameras"]["still"]["submitted"] == 0  # nothing moved there
            # The server stopped: every event ended, and was told so; motion is off.
            wait_for(lambda: sub.payloads(f"{mqtt_prefix}/door/motion")[-1:] == [b"OFF"], 10,
                     "motion OFF")  # fmt: skip
            ends = [m for m in person_events() if m["type"] == "end"]
            news = [m for m in person_events() if m["type"] == "new"]
            assert {m["after"]["id"] for m in news} <= {m["after"]["id"] for m in ends}
        # The webhook's bodies are signed.
        _, headers, body, _ = hook.requests[0]
        assert verify(SECRET, headers["X-VMS-Timestamp"], body, headers["X-VMS-Signature"])
        # NATS JetStream kept the door's events; the static camera raised none anywhere.
        got = fetch(stream, f"{subjects}.events.door", 1)
        assert got and got[0]["after"]["camera"] == "door"
        assert not [p for p in sub.payloads(f"{mqtt_prefix}/events")
                    if json.loads(p)["after"]["camera"] == "still"]  # fmt: skip
    finally:
        sub.close()
        hook.close()
