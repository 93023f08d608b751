"""WebRTC viewers of a camera stream (WHEP: draft-ietf-wish-whep, the viewer's side of WHIP,
RFC 9725): the camera's H.264 passed through aiortc without decoding or encoding; an H.265
stream as the camera's H.264 other stream or the shared H.264 rendition
(:mod:`vms.live.source`, held for the session's life).

Passthrough: aiortc's ``RTCRtpSender`` sends whatever its track's ``recv()`` returns. A
``Frame`` goes through an encoder; an ``av.Packet`` goes to its codec's ``pack()``, which for
H.264 splits the Annex B access unit into NAL units and packs them into RTP (RFC 6184: single
NAL unit, STAP-A, FU-A). The sender still makes its ``H264Encoder`` object, but that object
opens a libx264 context only when asked to encode a frame, which never happens here; no
decoder exists on the server side (our transceivers only send). G.711 is packed as it comes
(aiortc's PCM "encoder" object opens a ``pcm_mulaw``/``pcm_alaw`` context it is never given a
frame for). AAC cannot go over WebRTC (it carries Opus and G.711): with ``live.transcode_audio``
it comes as Opus from a shared transcoder (packed as it comes, like G.711), else the answer
has no audio (said why in the log, once per session).

A session subscribes to the relay when aiortc's sender first asks for media (DTLS is up), so
it starts at the relay's latest or next keyframe. RTP timestamps follow the camera's own
timestamps but stay within :data:`CLOCK_SLACK_S` of the moment each packet is sent
(:class:`RtpClock`): a backlog sent at once (a stream's first GOP, a camera that reconnected
with new timestamps) gets timestamps a tick apart, so the browser decodes it at once and plays
from the live edge instead of keeping the backlog's delay for good. A sender that falls behind
(the loop starved) skips to the next keyframe rather than queueing: once caught up, a video
packet older than :data:`MAX_LAG_S` starts a skip.

A session ends on ``DELETE`` of its resource, when ICE or DTLS fails (a browser gone without
saying so fails ICE's consent checks within about 30 s), when it does not connect within
:data:`CONNECT_TIMEOUT_S`, when its camera stream closes (camera removed or changed), and at
server stop. While the camera is offline the session waits, and resumes at the next keyframe.
A viewer whose offer opens a data channel is told: ``{"type": "offline", "since": ISO time}``
when the camera stream ends, ``{"type": "online"}`` when it is back (MSE's messages).

On that channel the viewer may send ``{"type": "select", "stream": "main" | "sub"}``, as over
MSE's WebSocket: the video track subscribes to the other stream's relay and switches at its
first keyframe (the relay's replay of the current GOP, :mod:`vms.live.switch`), the old stream
flowing until then. The keyframe carries its parameter sets (:func:`annexb`), the RTP
timestamps go on from the old stream's (:class:`RtpClock` pulls the new stream's own to the
send time) and the replayed GOP is sent squeezed, as at a start; the browser's decoder takes
the new size at that keyframe. The answer is ``{"type": "state", "stream", "switching"?}``, or
``{"type": "error", "message", "stream"}`` for a stream that cannot be sent (none, offline,
H.265). The audio stays on the stream the session was opened with (its codec was negotiated).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamError

from vms.cameras.relay import Item, Relay, Subscription
from vms.clock import Clock
from vms.config import LiveConfig
from vms.errors import Kind, VmsError
from vms.live.ice import aiortc_servers
from vms.live.offer import (
    G711_RATE,
    VIDEO_RATE,
    audio_wish,
    h264_preferences,
    offered_audio,
    parse_offer,
)
from vms.live.source import Chosen, Plays
from vms.live.switch import POLL_S, Waiter, read_ahead, sizes
from vms.media import (
    AUDIO,
    H264,
    VIDEO,
    Packet,
    StreamEnd,
    StreamInfo,
    StreamStart,
    length_split,
)
from vms.times import iso

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0  # an answered offer whose ICE and DTLS are not up by then is closed
MAX_LAG_S = 1.0  # a video packet this old when sent (once caught up) starts a skip
CAUGHT_UP_S = 0.3  # a packet this fresh ends the start's catch-up
CLOCK_SLACK_S = 0.15  # how far RTP time may run from send time before it is pulled back
# Packets a track's subscription may hold before the relay skips it to the next keyframe: room
# for a long GOP handed over at the start, with audio. The packets are the relay's own, shared
# by every subscriber: the bound costs references, not copies.
QUEUE = 1024
STREAMS = ("main", "sub")
MAX_MESSAGE = 1024  # a select is some 40 bytes
MAX_BUFFERED = 64 * 1024  # bytes queued on the data channel past which no more is told
_START = b"\x00\x00\x00\x01"
# What a session reads while it lives: the relay for a browser of the stream (its audio as the
# viewer plays it, else transcoded into the codec given when there is one).
Source = Callable[[Plays, str | None], contextlib.AbstractContextManager[Chosen]]
# A stream's relay as the server runs it now, by stream name; None when the camera has none.
RelayLookup = Callable[[str], Relay | None]


class RtpClock:
    """RTP timestamps for one track: the camera's spacing, kept within :data:`CLOCK_SLACK_S`
    of the send time, never going back (see the module docstring)."""

    def __init__(self, rate: int, origin: float) -> None:
        self.rate = rate
        self._origin = origin
        self._offset: int | None = None
        self._last: tuple[int, int] | None = None  # (media time, stamp) of the last packet

    def stamp(self, pts: int, timescale: int, now: float) -> int:
        media = pts * self.rate // timescale
        clock = round((now - self._origin) * self.rate)
        if self._offset is None:
            self._offset = clock - media
        last = self._last
        if last is not None and media == last[0]:
            return last[1]  # another packet of the same picture
        ts = media + self._offset
        slack = round(CLOCK_SLACK_S * self.rate)
        if not clock - slack <= ts <= clock + slack:
            ts = clock
        if last is not None and ts <= last[1]:
            ts = last[1] + 1
        self._offset = ts - media
        self._last = (media, ts)
        return ts


def annexb(p: Packet, info: StreamInfo) -> bytes:
    """The access unit with start codes, as aiortc's packetizer reads it; a keyframe that
    carries no parameter sets gets the stream's, so a browser can start at any keyframe."""
    nals = length_split(p.data)
    params = info.video.params
    if p.keyframe and p.params is None and params is not None:
        nals = [*params.sps, *params.pps, *nals]
    return b"".join(_START + n for n in nals)


@dataclass(eq=False)
class _Pending:
    """The stream a video track is being switched to, read ahead to its first keyframe."""

    stream: str
    relay: Relay
    sub: Subscription
    held: list[Item] = field(default_factory=list)


class _Passthrough(MediaStreamTrack):
    """One kind of a relay's packets, as ``av.Packet`` for aiortc's sender."""

    media = VIDEO

    def __init__(
        self, session: WhepSession, relay: Relay, now: float, rate: int = G711_RATE
    ) -> None:
        super().__init__()
        self._session = session
        self._relay = relay
        self._sub: Subscription | None = None
        self._info = relay.info
        self._rate = VIDEO_RATE if self.media == VIDEO else rate  # audio: its codec's clock
        self._time_base = fractions.Fraction(1, self._rate)
        self._rtp = RtpClock(self._rate, now)
        self._caught_up = False
        self._skip = False
        self._waiter = Waiter()
        self._held: list[Item] = []  # the switched-to stream's first items: handled first
        self._pending: _Pending | None = None
        self.sent = 0
        self.dropped = 0
        self.skips = 0

    def select(self, relay: Relay, stream: str) -> bool:
        """Switch to ``relay`` (``stream``'s) at its first keyframe; False when there is
        nothing to wait for (it is this track's relay, or the track has not started)."""
        self._drop_pending()
        if relay is self._relay:
            return False
        if self._sub is None:
            self._relay, self._info = relay, relay.info
            return False
        self._pending = _Pending(stream, relay, relay.subscribe(QUEUE))
        self._waiter.wake()
        return True

    def _drop_pending(self) -> None:
        if self._pending is not None:
            self._pending.sub.close()
            self._pending = None

    def _switch(self) -> None:
        new = self._pending
        if new is None or self._sub is None:  # stopped meanwhile
            return
        self._sub.close()
        self._relay, self._sub, self._held, self._pending = new.relay, new.sub, new.held, None
        # The replayed GOP is a backlog, as at a start: sent, squeezed, not skipped.
        self._caught_up = self._skip = False
        self._session.switched(new.stream)

    async def _next(self) -> Item | None:
        """The next item; None when a switch was made or asked for (look again)."""
        sub = self._sub
        if sub is None:  # stopped meanwhile
            return None
        if self._held:
            return self._held.pop(0)
        pending = self._pending
        if pending is not None and await read_ahead(pending.sub, pending.held):
            self._switch()
            return None
        try:
            return await self._waiter.next(sub, None if pending is None else POLL_S)
        except StopAsyncIteration:
            if self._pending is None:
                raise
            self._switch()  # the old stream closed first: go on with the new one
            return None

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._sub is None:
            # Subscribed here, on the loop, once DTLS is up: from the relay's latest keyframe.
            self._sub = self._relay.subscribe(QUEUE)
        while True:
            if self._sub is None:  # stopped (the session closed) while it waited
                raise MediaStreamError
            try:
                item = await self._next()
            except StopAsyncIteration:
                self._session.ended("the camera stream closed")
                raise MediaStreamError from None
            if item is None:
                continue
            if isinstance(item, StreamStart):
                self._info = item.info
                if self.media == VIDEO:
                    self._session.stream_started()
            elif isinstance(item, StreamEnd):
                if self.media == VIDEO:
                    self._session.stream_ended()
            elif isinstance(item, Packet) and item.kind == self.media and self._info is not None:
                out = self._packet(item, self._info, self._session.now())
                if out is not None:
                    self.sent += 1
                    return out

    def _packet(self, p: Packet, info: StreamInfo, now: float) -> av.Packet | None:
        behind = now - p.arrival
        if behind < CAUGHT_UP_S:
            self._caught_up = True
        elif self._caught_up and behind > MAX_LAG_S and not self._skip and self.media == VIDEO:
            self._skip = True
            self.skips += 1
        if self.media == VIDEO:
            if info.video.codec != H264:
                self.dropped += 1
                return None
            if self._skip:
                if not p.keyframe:
                    self.dropped += 1
                    return None
                self._skip = False
            out = av.Packet(annexb(p, info))
            timescale = info.video.timescale
        else:
            # Audio has no keyframes: stale packets just go, and a start's backlog (which the
            # video needs for its first picture) is not played at all.
            if behind > (MAX_LAG_S if self._caught_up else CAUGHT_UP_S):
                self.dropped += 1
                return None
            out = av.Packet(p.data)
            timescale = info.audio.timescale if info.audio is not None else G711_RATE
        out.pts = self._rtp.stamp(p.pts, timescale, now)
        out.time_base = self._time_base
        return out

    def stop(self) -> None:
        super().stop()
        self._drop_pending()
        if self._sub is not None:
            self._sub.close()
            self._sub = None


class VideoPassthrough(_Passthrough):
    kind = "video"
    media = VIDEO


class AudioPassthrough(_Passthrough):
    kind = "audio"
    media = AUDIO


@dataclass
class WhepSession:
    """One viewer: its peer connection and what it sends."""

    id: str
    camera_id: str
    stream: str
    owner: int  # the user who opened it: only they may end it
    pc: RTCPeerConnection
    sessions: WebRtcSessions
    opened: float
    tracks: list[_Passthrough] = field(default_factory=list)
    closing: asyncio.Task[None] | None = None
    channel: RTCDataChannel | None = None  # the viewer's, when its offer opened one
    offline_since: str | None = None
    held: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)  # its source
    relays: RelayLookup | None = None  # the camera's streams, for a viewer's select
    _timer: asyncio.TimerHandle | None = None

    def now(self) -> float:
        return self.sessions.clock.monotonic()

    def tell(self, message: dict[str, Any]) -> None:
        """A state message for the viewer, on its data channel if it opened one; dropped when
        the viewer does not read what it was sent (a peer that floods the channel with what
        it should not send, and reads nothing, grows no queue here)."""
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            if channel.bufferedAmount <= MAX_BUFFERED:
                channel.send(json.dumps(message))

    def stream_ended(self) -> None:
        self.offline_since = iso(self.sessions.clock.wall_us())
        self.tell({"type": "offline", "since": self.offline_since})

    def stream_started(self) -> None:
        if self.offline_since is not None:
            self.offline_since = None
            self.tell({"type": "online"})

    def received(self, text: object) -> None:
        """A message from the viewer on its data channel: a select, or an error back."""
        stream = None
        if isinstance(text, str) and len(text) <= MAX_MESSAGE:
            with contextlib.suppress(ValueError):
                msg = json.loads(text)
                if isinstance(msg, dict) and msg.get("type") == "select":
                    stream = msg.get("stream")
        if not isinstance(stream, str):
            expected = 'expected {"type": "select", "stream": "main" | "sub"}'
            self.tell({"type": "error", "message": expected})
            return
        error = self.select(stream)
        if error is not None:
            self.tell({"type": "error", "message": error, "stream": stream[:20]})

    def select(self, stream: str) -> str | None:
        """Switch the video to ``stream``; why not, or None."""
        if stream not in STREAMS:
            return f"no stream {stream[:20]!r}: {' or '.join(STREAMS)}"
        relay = None if self.relays is None else self.relays(stream)
        if relay is None:
            return f"the camera has no {stream} stream"
        info = relay.info
        if info is None:
            return f"the camera's {stream} stream is not running"
        if info.video.codec != H264:
            return f"the camera's {stream} stream is {info.video.codec}, not H.264"
        video = next(t for t in self.tracks if isinstance(t, VideoPassthrough))
        if video.select(relay, stream):
            self.tell(self.state(switching=stream))
        else:
            self.switched(stream)
        return None

    def switched(self, stream: str) -> None:
        """The video is ``stream``'s from now on."""
        if stream != self.stream:
            log.info("WebRTC viewer %s of %s switched to the %s stream",
                     self.id[:8], self.camera_id, stream)  # fmt: skip
        self.stream = stream
        self.tell(self.state())

    def state(self, switching: str | None = None) -> dict[str, Any]:
        """The state message: the stream sent, the one being switched to, the camera's
        streams and their sizes."""
        extra = {} if switching is None else {"switching": switching}
        streams = sizes({n: self.relays(n) for n in STREAMS}) if self.relays else {}
        return {"type": "state", "stream": self.stream, **extra, "streams": streams}

    def ended(self, reason: str) -> None:
        """Close this session soon (from a callback on the loop)."""
        if self.closing is None:
            self.closing = asyncio.ensure_future(self.sessions.close(self, reason))


class WebRtcSessions:
    """The server's WHEP sessions, at most ``live.webrtc_max_sessions`` at once."""

    def __init__(self, config: LiveConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self._sessions: dict[str, WhepSession] = {}
        self._opening = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, camera_id: str, session_id: str) -> WhepSession | None:
        s = self._sessions.get(session_id)
        return s if s is not None and s.camera_id == camera_id else None

    async def open(
        self, offer: str, source: Source, camera_id: str, stream: str, owner: int,
        relays: RelayLookup | None = None,
    ) -> tuple[WhepSession, str]:
        """A session answering ``offer`` with what ``source`` gives for it (held until the
        session ends): the session and the answer. ``relays``: the camera's streams, for the
        viewer's selects."""  # fmt: skip
        if len(self._sessions) + self._opening >= self.config.webrtc_max_sessions:
            raise VmsError(
                Kind.UNAVAILABLE,
                "the server has as many WebRTC viewers as it "
                f"takes ({self.config.webrtc_max_sessions}): use MSE or HLS",
            )
        description = parse_offer(offer)
        held = contextlib.ExitStack()
        with held:
            wish = audio_wish(description, self.config.transcode_audio)
            chosen = held.enter_context(source(*wish))
            info = chosen.info
            if info is None:
                raise VmsError(
                    Kind.UNAVAILABLE,
                    f"camera {camera_id}'s {stream} stream is not "
                    "running: try again when the camera is online",
                    headers={"Retry-After": "2"},
                )
            if info.video.codec != H264:
                raise VmsError(
                    Kind.INVALID_ARGUMENT,
                    f"camera {camera_id}'s {stream} stream is {info.video.codec}, not H.264",
                )
            held = held.pop_all()  # the session's from here
        self._opening += 1
        pc = RTCPeerConnection(RTCConfiguration(iceServers=aiortc_servers(self.config)))
        session = WhepSession(
            secrets.token_urlsafe(18), camera_id, stream, owner, pc, self, self.clock.monotonic(),
            held=held,
            relays=relays,
        )  # fmt: skip
        try:
            answer = await self._negotiate(session, description, offer, chosen.relay, info)
        except BaseException:
            await self._close_pc(session)
            raise
        finally:
            self._opening -= 1
        self._sessions[session.id] = session

        @pc.on("connectionstatechange")
        def _state() -> None:
            state = pc.connectionState
            if state == "connected" and session._timer is not None:
                session._timer.cancel()
                session._timer = None
            elif state in ("failed", "closed"):
                session.ended(f"the connection {state}")

        loop = asyncio.get_running_loop()
        session._timer = loop.call_later(CONNECT_TIMEOUT_S, session.ended, "it never connected")
        log.info("WebRTC viewer %s of %s (%s stream) opened%s", session.id[:8], camera_id, stream,
                 _served(chosen, stream))  # fmt: skip
        return session, answer

    async def _negotiate(
        self,
        session: WhepSession,
        description: aiortc_sdp.SessionDescription,
        offer: str,
        relay: Relay,
        info: StreamInfo,
    ) -> str:
        pc, now = session.pc, self.clock.monotonic()
        video = next(m for m in description.media if m.kind == "video")
        preferred = h264_preferences(video, info)
        # Transceivers made before the offer is applied, with their codecs: aiortc takes the
        # offer's first codec it knows otherwise (a browser lists VP8 first).
        track = VideoPassthrough(session, relay, now)
        session.tracks.append(track)
        pc.addTransceiver(track, direction="sendonly").setCodecPreferences(preferred)

        @pc.on("datachannel")
        def _channel(channel: RTCDataChannel) -> None:
            session.channel = channel
            channel.on("message", session.received)
            session.tell(session.state())
            if session.offline_since is not None:
                session.tell({"type": "offline", "since": session.offline_since})

        audio_codec = offered_audio(session.id[:8], description, info)
        if audio_codec is not None:
            sound = AudioPassthrough(session, relay, now, audio_codec.clockRate)
            session.tracks.append(sound)
            pc.addTransceiver(sound, direction="sendonly").setCodecPreferences([audio_codec])
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        except Exception as e:  # noqa: BLE001 - aiortc says what it cannot take in its own exceptions
            raise VmsError(Kind.INVALID_ARGUMENT, f"the SDP offer was refused: {e}") from None
        await pc.setLocalDescription(await pc.createAnswer())  # gathers every candidate
        return str(pc.localDescription.sdp)

    async def close(self, session: WhepSession, reason: str) -> None:
        """End ``session`` (its tracks stop, its peer connection closes)."""
        if self._sessions.pop(session.id, None) is None:
            return
        await self._close_pc(session)
        sent = sum(t.sent for t in session.tracks)
        dropped = sum(t.dropped for t in session.tracks)
        log.info(
            "WebRTC viewer %s of %s closed after %.0f s (%s): %d packets sent, %d dropped",
            session.id[:8],
            session.camera_id,
            session.now() - session.opened,
            reason,
            sent,
            dropped,
        )

    @staticmethod
    async def _close_pc(session: WhepSession) -> None:
        if session._timer is not None:
            session._timer.cancel()
            session._timer = None
        for t in session.tracks:
            t.stop()
        session.held.close()  # a rendition it read lingers, then stops if no one else reads it
        try:
            await session.pc.close()
        except Exception:  # a broken transport must not keep the session
            log.warning(
                "WebRTC viewer %s: closing its connection failed", session.id[:8], exc_info=True
            )

    async def close_all(self, reason: str = "the server is stopping") -> None:
        await asyncio.gather(*(self.close(s, reason) for s in list(self._sessions.values())))

    def close_all_from(self, loop: asyncio.AbstractEventLoop | None, timeout: float) -> None:
        """:meth:`close_all` from another thread (the server stopping), waiting up to
        ``timeout`` seconds."""
        if not self._sessions or loop is None or loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self.close_all(), loop)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            future.result(timeout)


def _served(chosen: Chosen, stream: str) -> str:
    """What a session reads, when it is not the stream as it was asked for (for the log)."""
    what = []
    if chosen.transcoded:
        what.append("its H.264 rendition")
    elif chosen.stream != stream:
        what.append(f"the {chosen.stream} stream (H.264)")
    if chosen.audio_into is not None:
        what.append(f"audio as {chosen.audio_into}")
    return f": {', '.join(what)}" if what else ""
