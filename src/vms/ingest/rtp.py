"""RTP for the native RTSP reader: SDP tracks, payloads into access units, timestamps.

H.264 (RFC 6184: single NAL unit, STAP-A, FU-A) and H.265 (RFC 7798: single, AP, FU) payloads
are reassembled into the NAL units of one access unit, which ends at the RTP marker bit. AAC
(RFC 3640, AU headers) and G.711 are handled by the session (one frame per AU or packet).

The SDP is parsed as field cameras write it, which is not always as the RFCs do: payload types
without an ``rtpmap`` (the static G.711 ones), parameter sets with start codes inside, relative
and absolute control URLs, the session's control before or after other lines.
"""

from __future__ import annotations

import base64
import contextlib
import re

from vms.media import (
    AAC,
    AUDIO,
    H264,
    HEVC,
    PCMA,
    PCMU,
    VIDEO,
    ParameterSets,
    annexb_split,
    collect_params,
)

# RFC 3551's static payload types that cameras use without an rtpmap line.
_STATIC = {0: ("PCMU", 8000), 8: ("PCMA", 8000)}
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class Media:
    """One SETUP'd track from the SDP, and what the SETUP and PLAY replies said about it."""

    def __init__(self, kind: int, codec: str, rate: int, control: str, channel: int) -> None:
        self.kind = kind
        self.codec = codec
        self.rate = rate
        self.control = control  # absolute: where SETUP goes
        self.channel = channel
        self.channels = 1
        self.config = b""
        self.params: ParameterSets | None = None
        self.payload_type = -1
        self.raw_control = ""  # the a=control value as written (RTP-Info may quote it)
        # From the SETUP reply's Transport and the PLAY reply's RTP-Info; None when absent or
        # unreadable. The first packet of the track should carry ``rtp_seq`` and ``rtp_time``.
        self.ssrc: int | None = None
        self.rtp_seq: int | None = None
        self.rtp_time: int | None = None


def join_control(base: str, control: str) -> str:
    """A control URL made absolute: as written, the base itself for ``*``, else appended.

    Trap: not RFC 3986 resolution. Against ``rtsp://cam/H264?channel=1`` a control ``video``
    would resolve to ``rtsp://cam/video``; cameras expect the control appended to the whole base,
    query included, as FFmpeg and live555 (the clients they are tested with) do it.
    """
    control = control.strip()
    if not control or control == "*":
        return base
    if _ABSOLUTE.match(control):
        return control
    return base.rstrip("/") + "/" + control


def aggregate_control(sdp: str, base: str) -> str:
    """The URL for requests on the whole session (PLAY): the session-level ``a=control``."""
    session = re.split(r"\r?\nm=", "\n" + sdp)[0]
    for line in session.splitlines():
        if line.startswith("a=control:"):
            return join_control(base, line[10:])
    return base


def parse_sdp(sdp: str, base: str) -> tuple[Media | None, Media | None]:
    """The first supported video and audio tracks of an SDP."""
    video: Media | None = None
    audio: Media | None = None
    blocks = re.split(r"\r?\nm=", "\n" + sdp)[1:]
    for block in blocks:
        lines = block.splitlines()
        head = lines[0].split() if lines else []
        if not head:
            continue
        kind, formats = head[0], head[3:]
        attrs = [ln[2:].strip() for ln in lines[1:] if ln.startswith("a=")]
        maps = {}
        fmtps = {}
        for a in attrs:
            key, _, rest = a.partition(" ")
            if key.startswith("rtpmap:"):
                maps[key[7:]] = rest.strip()
            elif key.startswith("fmtp:"):
                fmtps[key[5:]] = rest.strip()
        control = next((a[8:] for a in attrs if a.startswith("control:")), "")
        # The track's payload type: the first of the m= line's formats that an rtpmap
        # describes, else a static one; failing both, the first rtpmap (the m= line is wrong).
        pt = next((f for f in formats if f in maps), None)
        static = [f for f in formats if f.isdigit() and int(f) in _STATIC]
        if pt is None and static:
            pt = static[0]
            name, rate_s, chans = _STATIC[int(pt)][0], str(_STATIC[int(pt)][1]), ""
        else:
            pt = pt or next(iter(maps), None)
            if pt is None:
                continue
            name, _, rest = maps[pt].partition("/")
            rate_s, _, chans = rest.partition("/")
        rate = int(rate_s) if rate_s.strip().isdigit() else 0
        fmtp = fmtps.get(pt, "")
        params = {}
        for p in fmtp.split(";"):
            k, eq, v = p.partition("=")
            if eq:
                params[k.strip().lower()] = v.strip()
        name = name.strip().upper()
        media = None
        if kind == "video" and video is None and name in ("H264", "H265"):
            codec = H264 if name == "H264" else HEVC
            media = video = Media(VIDEO, codec, rate or 90000, join_control(base, control), 0)
            video.params = sprop(codec, params)
        elif kind == "audio" and audio is None and name in ("MPEG4-GENERIC", "PCMU", "PCMA"):
            codec = {"MPEG4-GENERIC": AAC, "PCMU": PCMU, "PCMA": PCMA}[name]
            media = audio = Media(AUDIO, codec, rate or 8000, join_control(base, control), 2)
            audio.channels = int(chans) if chans.strip().isdigit() else 1
            if codec == AAC:
                with contextlib.suppress(ValueError):
                    audio.config = bytes.fromhex(params.get("config", ""))
                # The decoder follows the AudioSpecificConfig, not the rtpmap: a camera that
                # says "/2" there and sends mono must not be recorded as stereo.
                if len(audio.config) >= 2 and 1 <= (audio.config[1] >> 3) & 0xF <= 7:
                    audio.channels = (audio.config[1] >> 3) & 0xF
        if media is not None:
            media.payload_type = int(pt) if pt.isdigit() else -1
            media.raw_control = control.strip()
    return video, audio


def offered(sdp: str) -> str:
    """What an SDP offers, for an operator: ``video JPEG, audio PCMU``."""
    names = {0: "PCMU", 8: "PCMA", 14: "MPEG audio", 26: "JPEG", 32: "MPEG video"}
    out = []
    for block in re.split(r"\r?\nm=", "\n" + sdp)[1:]:
        head = block.split(None, 4)
        if len(head) < 4:
            continue
        rtpmap = re.search(rf"^a=rtpmap:{re.escape(head[3])} ([^/\s]+)", block, re.MULTILINE)
        name = rtpmap.group(1) if rtpmap else names.get(int(head[3]) if head[3].isdigit() else -1)
        out.append(f"{head[0]} {name or 'payload type ' + head[3]}")
    return ", ".join(out) or "no media"


def sprop(codec: str, fmtp: dict[str, str]) -> ParameterSets | None:
    def b64(values: str) -> list[bytes]:
        out = []
        for v in values.split(","):
            v = v.strip()
            with contextlib.suppress(ValueError):
                if v:
                    nal = base64.b64decode(v + "=" * (-len(v) % 4))
                    # Some cameras put start codes around the NAL units in their sprop.
                    out.extend(annexb_split(nal) if b"\x00\x00\x01" in nal else [nal])
        return out

    if codec == H264:
        nals = b64(fmtp.get("sprop-parameter-sets", ""))
    else:
        nals = [n for k in ("sprop-vps", "sprop-sps", "sprop-pps") for n in b64(fmtp.get(k, ""))]
    return collect_params(codec, [n for n in nals if n])


# The most one access unit may hold. A camera's frame is far smaller (a 4K keyframe is a few MB);
# a hostile or broken sender could otherwise make the reader hold any amount, and memory that
# Python's allocator has handed out in small fragments is not given back to the system.
MAX_ACCESS_UNIT = 8 << 20


class Depacketizer:
    """RTP payloads of one video track → access units (length-prefixed), on the marker bit.

    An access unit that grows past :data:`MAX_ACCESS_UNIT`, or that :meth:`lost` says is
    damaged, is dropped through its marker bit: :meth:`push` then returns ``[]`` instead of its
    NAL units.
    """

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.nals: list[bytes] = []
        self.fu: list[bytes] | None = None
        self.size = 0  # payload bytes of the access unit so far
        self.dropping = False
        self.oversized = 0  # access units dropped for their size

    def lost(self) -> None:
        """Packets were lost: drop the access unit being received, up to its marker bit."""
        self.nals, self.fu = [], None
        self.dropping = True
        self.size = MAX_ACCESS_UNIT + 1  # takes the slow path in push() until the marker

    def push(self, payload: memoryview, marker: bool) -> list[bytes] | None:
        self.size += len(payload)
        if self.size > MAX_ACCESS_UNIT:
            return self._drop(marker)
        if not payload:
            return None
        if self.codec == H264:
            self._h264(payload)
        else:
            self._h265(payload)
        if marker:
            self.size = 0
            if self.nals:
                nals, self.nals = self.nals, []
                return nals
        return None

    def _drop(self, marker: bool) -> list[bytes] | None:
        if not self.dropping:
            self.oversized += 1
            self.nals, self.fu = [], None
            self.dropping = True
        if not marker:
            return None
        self.dropping = False
        self.size = 0
        return []

    def _h264(self, p: memoryview) -> None:
        t = p[0] & 0x1F
        if t == 28 and len(p) > 2:  # FU-A
            fu = p[1]
            if fu & 0x80:
                self.fu = [bytes([(p[0] & 0xE0) | (fu & 0x1F)]), bytes(p[2:])]
            elif self.fu is not None:
                self.fu.append(bytes(p[2:]))
            if fu & 0x40 and self.fu is not None:
                self.nals.append(b"".join(self.fu))
                self.fu = None
        elif t == 24:  # STAP-A
            q = 1
            while q + 2 <= len(p):
                size = (p[q] << 8) | p[q + 1]
                self.nals.append(bytes(p[q + 2 : q + 2 + size]))
                q += 2 + size
        elif 1 <= t <= 23:
            self.nals.append(bytes(p))

    def _h265(self, p: memoryview) -> None:
        if len(p) < 3:
            return
        t = (p[0] >> 1) & 0x3F
        if t == 49:  # FU
            fu = p[2]
            if fu & 0x80:
                head = bytes([(p[0] & 0x81) | ((fu & 0x3F) << 1), p[1]])
                self.fu = [head, bytes(p[3:])]
            elif self.fu is not None:
                self.fu.append(bytes(p[3:]))
            if fu & 0x40 and self.fu is not None:
                self.nals.append(b"".join(self.fu))
                self.fu = None
        elif t == 48:  # AP
            q = 2
            while q + 2 <= len(p):
                size = (p[q] << 8) | p[q + 1]
                self.nals.append(bytes(p[q + 2 : q + 2 + size]))
                q += 2 + size
        else:
            self.nals.append(bytes(p))


class RtpClock:
    """RTP's 32-bit timestamps, extended so they never wrap."""

    def __init__(self) -> None:
        self.last: int | None = None
        self.high = 0

    def nearest(self, ts: int) -> int | None:
        """The extended value of ``ts`` closest to the last timestamp seen (None before one)."""
        if self.last is None:
            return None
        diff = (ts - self.last) & 0xFFFFFFFF
        return self.high + self.last + (diff - (1 << 32) if diff & 0x80000000 else diff)

    def extend(self, ts: int) -> int:
        if self.last is not None and ts < self.last and self.last - ts > 0x80000000:
            self.high += 1 << 32
        elif self.last is not None and ts > self.last and ts - self.last > 0x80000000:
            return self.high - (1 << 32) + ts  # a late packet from before a wrap
        self.last = ts
        return self.high + ts
