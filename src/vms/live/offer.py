"""A viewer's SDP offer, as WHEP receives it: checked with a message that says what is wrong,
and the codecs the answer takes from it (the camera's H.264 profile; G.711 audio as it is, or
Opus from the server's audio transcoder).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from aiortc import RTCRtpCodecCapability, RTCRtpSender
from aiortc import sdp as aiortc_sdp
from aiortc.codecs import CODECS
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters

from vms.errors import Kind, VmsError, capped
from vms.media import OPUS, PCMA, PCMU, AudioInfo, StreamInfo

log = logging.getLogger(__name__)

MAX_OFFER_BYTES = 64 * 1024
VIDEO_RATE = 90_000
G711_RATE = 8_000
OPUS_RATE = 48_000
_G711_MIME = {PCMU: "audio/PCMU", PCMA: "audio/PCMA"}
_AUDIO_MIME = {**_G711_MIME, OPUS: "audio/opus"}

# aiortc offers and accepts H.264 in (constrained) baseline only, and matches an offer's codec
# by profile: a camera's Main or High stream would be answered as baseline. These make the
# answer name the profile that is sent. (The level stays 3.1, as browsers offer it: their
# decoders take higher levels.)
_H264_PROFILES = ("4d001f", "64001f", "640c1f")


def _register_h264_profiles() -> None:
    video = CODECS["video"]
    have = {c.parameters.get("profile-level-id") for c in video if c.name == "H264"}
    payload_type = max(c.payloadType or 0 for c in video) + 1
    for profile in _H264_PROFILES:
        if profile in have:
            continue
        params: dict[str, str | int | None] = {
            "level-asymmetry-allowed": "1",
            "packetization-mode": "1",
            "profile-level-id": profile,
        }
        feedback = [
            RTCRtcpFeedback(type="nack"),
            RTCRtcpFeedback(type="nack", parameter="pli"),
            RTCRtcpFeedback(type="goog-remb"),
        ]
        video.append(
            RTCRtpCodecParameters(
                mimeType="video/H264",
                clockRate=VIDEO_RATE,
                payloadType=payload_type,
                rtcpFeedback=feedback,
                parameters=params,
            )
        )
        video.append(
            RTCRtpCodecParameters(
                mimeType="video/rtx",
                clockRate=VIDEO_RATE,
                payloadType=payload_type + 1,
                parameters={"apt": payload_type},
            )
        )
        payload_type += 2


_register_h264_profiles()


_SDP_LINE = re.compile(r"[a-z]=[^\x00-\x08\x0a-\x1f\x7f]*")
_MEDIA_LINE = re.compile(r"m=[a-z]+ [0-9]{1,5}(/[0-9]+)? [A-Za-z/]+( [0-9A-Za-z-]+)+")


def parse_offer(offer: str) -> aiortc_sdp.SessionDescription:
    """The offer, parsed; a clear 400 when it is not one WHEP can answer."""
    if not offer.startswith("v=0"):
        raise VmsError(
            Kind.INVALID_ARGUMENT, "the body is not an SDP offer (it must start with v=0)"
        )
    # aiortc's parser trusts its input (an assertion, an unpacking): the lines are checked
    # first, so that the answer can say which one is wrong.
    for n, line in enumerate(offer.splitlines(), 1):
        if line and not (_SDP_LINE.fullmatch(line) and
                         (not line.startswith("m=") or _MEDIA_LINE.fullmatch(line))):  # fmt: skip
            raise VmsError(Kind.INVALID_ARGUMENT, f"the SDP offer is malformed at line {n}: "
                           f"{capped(line)}")  # fmt: skip
    try:
        description = aiortc_sdp.SessionDescription.parse(offer)
    except Exception as e:  # noqa: BLE001 - the parser raises what its input made it raise
        raise VmsError(
            Kind.INVALID_ARGUMENT, f"the SDP offer is malformed ({type(e).__name__}: {e})"
        ) from None
    videos = [m for m in description.media if m.kind == "video"]
    if not videos:
        raise VmsError(Kind.INVALID_ARGUMENT, "the SDP offer has no video (m=video) section")
    if videos[0].direction not in ("recvonly", "sendrecv"):
        said = f"it is {videos[0].direction}" if videos[0].direction else "it gives none"
        raise VmsError(Kind.INVALID_ARGUMENT, f"the SDP offer's video must be recvonly ({said})")
    ice, dtls = videos[0].ice, videos[0].dtls
    if ice is None or not ice.usernameFragment or dtls is None or not dtls.fingerprints:
        raise VmsError(
            Kind.INVALID_ARGUMENT,
            "the SDP offer has no ICE credentials or DTLS fingerprint: it is not a WebRTC offer",
        )
    return description


def _profile(profile_level_id: object) -> aiortc_sdp.H264Profile | None:
    try:
        return aiortc_sdp.parse_h264_profile_level_id(str(profile_level_id))[0]
    except ValueError:
        return None


def h264_preferences(
    video: aiortc_sdp.MediaDescription, info: StreamInfo
) -> list[RTCRtpCodecCapability]:
    """Our H.264 codecs the offer also has, the camera's own profile only when it is offered
    (else any: browsers decode past the profile they offered), then RTX (retransmission)."""
    offered = {
        _profile(c.parameters.get("profile-level-id", "42e01f"))
        for c in video.rtp.codecs
        if c.name.lower() == "h264" and str(c.parameters.get("packetization-mode")) == "1"
    }
    offered.discard(None)
    if not offered:
        raise VmsError(
            Kind.INVALID_ARGUMENT,
            "the SDP offer takes no H.264 "
            "(packetization-mode=1) video: the camera's H.264 is sent as it is",
        )
    ours = [
        c
        for c in RTCRtpSender.getCapabilities("video").codecs
        if c.name == "H264" and _profile(c.parameters.get("profile-level-id")) in offered
    ]
    params = info.video.params
    camera = _profile(params.sps[0][1:4].hex()) if params is not None and params.sps else None
    if not ours:
        raise VmsError(
            Kind.INVALID_ARGUMENT,
            "the SDP offer takes no H.264 profile this "
            "server sends (constrained baseline, baseline, main or high)",
        )
    own = [c for c in ours if _profile(c.parameters.get("profile-level-id")) == camera]
    rtx = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.name == "rtx"]
    return (own or ours) + rtx


def _wanted_audio(description: aiortc_sdp.SessionDescription) -> set[str]:
    """The audio MIME types (lower case) the offer receives; empty when it takes no audio."""
    wanted = next(
        (
            m
            for m in description.media
            if m.kind == "audio" and m.direction in ("recvonly", "sendrecv")
        ),
        None,
    )
    return set() if wanted is None else {c.mimeType.lower() for c in wanted.rtp.codecs}


def audio_wish(
    description: aiortc_sdp.SessionDescription, transcode: bool
) -> tuple[Callable[[AudioInfo], bool], str | None]:
    """What the viewer plays as it is (G.711 at 8 kHz, mono, of a kind it offers), and the
    codec to transcode other audio into (Opus, when ``transcode`` and the offer takes it)."""
    mimes = _wanted_audio(description)

    def plays(audio: AudioInfo) -> bool:
        mime = _G711_MIME.get(audio.codec)
        g711 = mime is not None and audio.sample_rate == G711_RATE and audio.channels == 1
        return (g711 or audio.codec == OPUS) and _AUDIO_MIME[audio.codec].lower() in mimes

    return plays, OPUS if transcode and "audio/opus" in mimes else None


def offered_audio(
    viewer: str, description: aiortc_sdp.SessionDescription, info: StreamInfo
) -> RTCRtpCodecCapability | None:
    """The codec to send the stream's audio in (G.711 as it comes, Opus from the transcoder),
    or None (said why, once)."""
    audio = info.audio
    mimes = _wanted_audio(description)
    if audio is None or not mimes:
        return None
    plays, _ = audio_wish(description, False)
    if not plays(audio):
        mime = _AUDIO_MIME.get(audio.codec)
        if mime is not None and mime.lower() not in mimes:
            log.info("WebRTC viewer %s: the offer takes no %s: audio is not sent", viewer, mime)
        else:
            log.info("WebRTC viewer %s: the camera's %s audio (%d Hz) is not sent (WebRTC "
                     "carries Opus and 8 kHz G.711; live.transcode_audio makes Opus of it)",
                     viewer, audio.codec.upper(), audio.sample_rate)  # fmt: skip
        return None
    mime = _AUDIO_MIME[audio.codec].lower()
    return next(
        c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == mime
    )
