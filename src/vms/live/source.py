"""Which relay a live viewer in a browser reads: the camera stream it asked for, unless that
stream is H.265, which the browsers here do not decode, or carries audio the viewer's transport
does not.

For an H.265 stream the camera's other stream is taken when it is H.264 (a camera's sub-stream
often is: no work at all), and otherwise the stream's shared H.264 rendition
(:class:`~vms.live.transcode.Transcoder`), started for the first such viewer and stopped after
the last; a player that decodes H.265 (``hevc``: Safari) gets the stream as it is. Audio the
viewer cannot play is transcoded when asked (``audio_into``: ``live.transcode_audio``) by a
shared :class:`~vms.live.audio.AudioTranscoder` reading whatever relay the video choice gave
(the camera's, or the H.264 rendition: the two chain), and otherwise left for the transport to
drop. Players that take the camera's stream as it is (an export, ffmpeg, HLS's native variant)
read the camera's relay directly and never come here. The choice is made when the viewer
connects: a camera offline then is served as asked, whatever its codecs when it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import TypeVar

from vms.cameras.relay import Relay
from vms.live.audio import AudioTranscoder, can_transcode, converted
from vms.live.transcode import TIMESCALE, Rendition, Transcoder
from vms.media import H264, HEVC, AudioInfo, StreamInfo, VideoInfo

K = TypeVar("K", bound=Hashable)
R = TypeVar("R", bound=Rendition)
# Whether a viewer plays this audio as it is.
Plays = Callable[[AudioInfo], bool]


def plays_any(audio: AudioInfo) -> bool:
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class Chosen:
    relay: Relay
    stream: str  # the stream served: the one asked for, or the other one
    transcoded: bool  # the video is the shared H.264 rendition
    # The stream as the viewer gets it, as far as it is known when it connects (a rendition's
    # parameter sets come with its first keyframe); None when the camera is offline.
    info: StreamInfo | None = None
    audio_into: str | None = None  # the codec the audio is transcoded into; None: as it is


@contextlib.contextmanager
def relay_of(chosen: contextlib.AbstractContextManager[Chosen]) -> Iterator[Relay]:
    """Only the relay of a choice (for a feed that needs no more)."""
    with chosen as c:
        yield c.relay


class LiveSources:
    """The renditions of a server: one H.264 transcoder per camera stream that needed one, one
    audio transcoder per relay and target codec. Use on the event loop's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop  # None: the running loop at the first use
        self._transcoders: dict[tuple[str, str], Transcoder] = {}
        self._audio: dict[tuple[str, str, bool, str], AudioTranscoder] = {}

    @contextlib.contextmanager
    def for_browser(
        self, camera_id: str, relays: Mapping[str, Relay], stream: str, *, hevc: bool = False,
        plays: Plays = plays_any, audio_into: str | None = None,
    ) -> Iterator[Chosen]:  # fmt: skip
        """The relay for a browser viewer of ``relays[stream]`` while the block runs: H.264
        (unless ``hevc``), and audio it ``plays``, else in ``audio_into`` when that is given."""
        with contextlib.ExitStack() as held:
            relay, served, transcoded = self._video(held, camera_id, relays, stream, hevc)
            info = relays[served].info  # a rendition passes the camera's audio on as it is
            if info is not None and transcoded:
                video = info.video
                info = StreamInfo(VideoInfo(H264, TIMESCALE, video.width, video.height, None),
                                  info.audio)  # fmt: skip
            audio = info.audio if info is not None else None
            into = None
            if (audio is not None and audio_into is not None and not plays(audio)
                    and can_transcode(audio, audio_into)):  # fmt: skip
                into, name = audio_into, f"{camera_id}/{served}"

                def make(src: Relay, loop: asyncio.AbstractEventLoop) -> AudioTranscoder:
                    return AudioTranscoder(src, loop, name, audio_into)

                key = (camera_id, served, transcoded, into)
                relay = self._acquire(held, self._audio, key, relay, make)
                assert info is not None
                info = dataclasses.replace(info, audio=converted(audio, into))
            yield Chosen(relay, served, transcoded, info, into)

    def _video(
        self, held: contextlib.ExitStack, camera_id: str, relays: Mapping[str, Relay],
        stream: str, hevc: bool,
    ) -> tuple[Relay, str, bool]:  # fmt: skip
        relay = relays[stream]
        if hevc or not _is_hevc(relay):
            return relay, stream, False
        for other, alt in relays.items():
            if other != stream and alt.info is not None and not _is_hevc(alt):
                return alt, other, False
        name = f"{camera_id}/{stream}"
        out = self._acquire(held, self._transcoders, (camera_id, stream), relay,
                            lambda src, loop: Transcoder(src, loop, name))  # fmt: skip
        return out, stream, True

    def _acquire(
        self, held: contextlib.ExitStack, kept: dict[K, R], key: K, source: Relay,
        make: Callable[[Relay, asyncio.AbstractEventLoop], R],
    ) -> Relay:  # fmt: skip
        """The relay of ``kept[key]`` (made anew when its source relay was replaced), released
        when ``held`` closes."""
        rendition = kept.get(key)
        if rendition is None or rendition.source is not source:
            rendition = kept[key] = make(source, self.loop or asyncio.get_running_loop())
        out = rendition.acquire()
        held.callback(rendition.release)
        return out

    def running(self) -> list[Rendition]:
        """The renditions running now (for tests and the log)."""
        kept: list[Rendition] = [*self._transcoders.values(), *self._audio.values()]
        return [r for r in kept if r.running]

    def stop(self) -> None:
        """Stop every rendition (the server is stopping)."""
        for r in self.running():
            r.stop()
        self._transcoders.clear()
        self._audio.clear()


def _is_hevc(relay: Relay) -> bool:
    info = relay.info
    return info is not None and info.video.codec == HEVC
