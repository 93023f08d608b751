"""H.265 to H.264 for browsers: a real HEVC clip through the transcoder's relays, decoded back
as H.264; keyframes where the source had them; it runs only while someone watches."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import av
import pytest
from websockets.sync.client import connect

from tests.support.browser import served_app
from tests.support.polling import wait_for
from vms.auth import local
from vms.cameras.relay import Relay
from vms.config import StreamName, from_dict
from vms.ingest.pyav_source import read_clip
from vms.live import transcode
from vms.live.fmp4 import LiveMuxer
from vms.live.source import LiveSources
from vms.media import H264, HEVC, VIDEO, Packet, StreamEnd, StreamStart


def test_an_hevc_stream_comes_out_as_h264_with_the_same_keyframes(
    clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    info, packets = read_clip(clips["hevc"])
    assert info.video.codec == HEVC
    video = [p for p in packets if p.kind == VIDEO]

    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        source = Relay(loop)
        source.publish(StreamStart(info))
        tc = transcode.Transcoder(source, loop, "cam1")
        sub = tc.acquire().subscribe()
        for p in packets:  # as a reader thread would publish them
            await loop.run_in_executor(None, source.publish, p)
        await loop.run_in_executor(None, source.publish, StreamEnd("clip over"))
        got: list[object] = []
        async for item in sub:
            got.append(item)
            if isinstance(item, StreamEnd):
                break
        monkeypatch.setattr(transcode, "LINGER_S", 0.01)
        tc.release()
        while tc.running:
            await asyncio.sleep(0.01)
        assert tc.frames_in == len(video)
        return got

    got = asyncio.run(main())
    start = got[0]
    assert isinstance(start, StreamStart) and start.info.video.codec == H264
    assert (start.info.video.width, start.info.video.height) == (320, 240)
    out = [p for p in got if isinstance(p, Packet) and p.kind == VIDEO]
    # Every frame in comes out (the decoder's held frames flushed at the end), keyframes at the
    # source's keyframes.
    assert len(out) == len(video)
    scale = 90_000 / info.video.timescale
    assert {round(p.pts * scale) for p in video if p.keyframe} == {p.pts for p in out if p.keyframe}
    # What a live player gets plays: the muxer's init and fragments decode as H.264.
    mux = LiveMuxer(start.info)
    data = mux.init + b"".join(mux.fragment([p]) for p in out)
    with av.open(io.BytesIO(data)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        frames = list(c.decode(video=0))
    assert len(frames) == len(video)
    assert (frames[0].width, frames[0].height) == (320, 240)


def test_annexb_puts_parameter_sets_first() -> None:
    au = b"\x00\x00\x00\x03abc\x00\x00\x00\x02de"
    assert transcode.annexb(au) == b"\x00\x00\x00\x01abc\x00\x00\x00\x01de"
    assert transcode.annexb(au, [b"P"]) == b"\x00\x00\x00\x01P\x00\x00\x00\x01abc\x00\x00\x00\x01de"


def test_a_browser_gets_the_h264_stream_of_an_hevc_camera_or_a_shared_rendition(
    clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    hevc, _ = read_clip(clips["hevc"])
    h264, _ = read_clip(clips["h264"])
    monkeypatch.setattr(transcode, "LINGER_S", 0.01)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sources = LiveSources(loop)
        main_, sub = Relay(loop), Relay(loop)
        main_.publish(StreamStart(hevc))
        sub.publish(StreamStart(h264))
        with sources.for_browser("cam1", {"main": main_, "sub": sub}, "main") as chosen:
            assert chosen.relay is sub and chosen.stream == "sub" and not chosen.transcoded
        only = {"main": main_}
        with (
            sources.for_browser("cam1", only, "main") as a,
            sources.for_browser("cam1", only, "main") as b,
        ):
            assert a.transcoded and a.relay is b.relay  # one rendition for every viewer
            (tc,) = sources._transcoders.values()
            assert tc.running and tc.viewers == 2
        while tc.running:  # stopped once the last viewer has gone (and the linger is over)
            await asyncio.sleep(0.01)
        with sources.for_browser("cam1", {"main": sub}, "main") as plain:
            assert plain.relay is sub and not plain.transcoded
        sources.stop()

    asyncio.run(main())


def test_a_browser_watching_an_hevc_camera_over_mse_gets_h264(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    """The real path: an H.265 camera (a looped file), the server, its WebSocket."""
    cfg = from_dict({
        "data_dir": str(tmp_path / "data"),
        "storage": {"roots": [{"name": "r1", "path": str(tmp_path / "r1"), "create": True,
                               "min_free_bytes": 0}]},
        "cameras": [{"id": "hevc", "main": {"url": clips["hevc"].as_uri()}}],
    })  # fmt: skip
    with served_app(cfg) as (base, server):
        relay = server.camera("hevc").streams[StreamName.MAIN].relay
        wait_for(lambda: relay.info is not None, 30, "the camera streaming")
        url = base.replace("http://", "ws://") + "/api/v1/cameras/hevc/live.ws"
        headers = local.headers(cfg.data_dir)
        with connect(url, additional_headers=headers) as ws:
            init = json.loads(ws.recv(timeout=30))
            assert init["type"] == "init" and init["codecs"].startswith("avc1."), init
            data = b"".join(ws.recv(timeout=30) for _ in range(30))  # init segment + 29 frames
            (tc,) = server.live_sources._transcoders.values()
            assert tc.running and tc.viewers == 1
        with av.open(io.BytesIO(data)) as c:
            assert c.streams.video[0].codec_context.name == "h264"
            assert len(list(c.decode(video=0))) >= 25
        with connect(url + "?hevc=true", additional_headers=headers) as ws:
            init = json.loads(ws.recv(timeout=30))
            assert init["codecs"].startswith(("hvc1.", "hev1.")), init  # a player that decodes it
