"""H.265 to H.264 for browsers: a real HEVC clip through the transcoder's relays, decoded back
as H.264; keyframes where the source had them; it runs only while someone watches."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from websockets.sync.client import connect

from tests.support.browser import served_app
from tests.support.polling import wait_for
from vms.auth import local
from vms.cameras.relay import Relay
from vms.config import StreamName, from_dict
from vms.ingest.pyav_source import read_clip
from vms.live import transcode
from vms.live.audio import AudioTranscoder
from vms.live.fmp4 import LiveMuxer
from vms.live.source import LiveSources
from vms.media import (
    AAC,
    AUDIO,
    H264,
    HEVC,
    PCMU,
    VIDEO,
    AudioInfo,
    Packet,
    StreamEnd,
    StreamInfo,
    StreamStart,
    VideoInfo,
)


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


def _mulaw_packets(seconds: float, start: int) -> list[Packet]:
    """20 ms G.711 µ-law packets of a 440 Hz tone from ``start`` (8 kHz ticks)."""
    enc = av.CodecContext.create("pcm_mulaw", "w")
    enc.sample_rate, enc.layout, enc.format = 8000, "mono", "s16"
    enc.time_base = Fraction(1, 8000)
    n = int(seconds * 8000)
    tone = (np.sin(np.arange(n) * 2 * np.pi * 440 / 8000) * 8000).astype(np.int16)
    out = []
    for i in range(0, n, 160):
        frame = av.AudioFrame.from_ndarray(tone[None, i : i + 160], format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, i
        data = b"".join(bytes(p) for p in enc.encode(frame))
        out.append(Packet(AUDIO, data, start + i, start + i, True, 0.0))
    return out


def test_audio_is_transcoded_with_its_samples_counted_and_starts_over_after_a_jump() -> None:
    video = VideoInfo(H264, 90_000, 320, 240, None)
    info = StreamInfo(video, AudioInfo(PCMU, 8000, 8000, 1))
    key = Packet(VIDEO, b"\x00\x00\x00\x01\x65", 0, 0, True, 0.0)
    # Two seconds, then the camera's clock jumps three seconds ahead (lost packets), one more.
    before, after = _mulaw_packets(2.0, 0), _mulaw_packets(1.0, 5 * 8000)

    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        source = Relay(loop)
        source.publish(StreamStart(info))
        tc = AudioTranscoder(source, loop, "cam1", AAC)
        sub = tc.acquire().subscribe()
        for p in [key, *before, *after]:
            await loop.run_in_executor(None, source.publish, p)
        await loop.run_in_executor(None, source.publish, StreamEnd("over"))
        got = [item async for item in _until_end(sub)]
        tc.stop()
        assert tc.packets_in == len(before) + len(after)
        return got

    got = asyncio.run(main())
    start = got[0]
    assert isinstance(start, StreamStart) and start.info.video is video
    audio = start.info.audio
    assert audio is not None and (audio.codec, audio.sample_rate, audio.channels) == (AAC, 8000, 1)
    assert audio.config  # the encoder's AudioSpecificConfig, for an init segment
    assert got[1] is key  # video goes through as it is
    out = [p for p in got if isinstance(p, Packet) and p.kind == AUDIO]
    stamps = [p.pts for p in out]
    # Counted in 1024-sample frames from the first packet's time, the encoder's priming first;
    # after the jump, counted again from the packet that jumped.
    jump = next(i for i, t in enumerate(stamps) if t >= 5 * 8000 - 1024)
    assert stamps[0] == -1024 and stamps[jump] == 5 * 8000 - 1024
    assert all(b - a == 1024 for a, b in itertools.pairwise(stamps[:jump - 1]))
    assert all(b - a == 1024 for a, b in itertools.pairwise(stamps[jump:-1]))
    dec = av.CodecContext.create("aac", "r")
    dec.extradata = audio.config
    pcm = np.concatenate([f.to_ndarray()[0] for p in out
                          for f in dec.decode(av.Packet(p.data))])  # fmt: skip
    assert 3 * 8000 <= len(pcm) <= 3 * 8000 + 4 * 1024  # every sample, plus priming and padding
    assert 0.1 < float(np.abs(pcm).max()) < 0.5  # the tone (8000 / 32768 ≈ 0.24), not silence


async def _until_end(sub: Any) -> Any:
    async for item in sub:
        yield item
        if isinstance(item, StreamEnd):
            return
