"""Which relay a live viewer in a browser reads: the camera stream it asked for, unless that
stream is H.265, which the browsers here do not decode.

For an H.265 stream the camera's other stream is taken when it is H.264 (a camera's sub-stream
often is: no work at all), and otherwise the stream's shared H.264 rendition
(:class:`~vms.live.transcode.Transcoder`), started for the first such viewer and stopped after
the last. Players that decode H.265 themselves (an export, ffmpeg) read the camera's relay
directly and never come here. The choice is made when the viewer connects: a camera offline
then is served as asked, whatever its codec when it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator, Mapping

from vms.cameras.relay import Relay
from vms.live.transcode import Transcoder
from vms.media import HEVC


@dataclasses.dataclass(frozen=True, slots=True)
class Chosen:
    relay: Relay
    stream: str  # the stream served: the one asked for, or the other one
    transcoded: bool


@contextlib.contextmanager
def relay_of(chosen: contextlib.AbstractContextManager[Chosen]) -> Iterator[Relay]:
    """Only the relay of a choice (for a feed that needs no more)."""
    with chosen as c:
        yield c.relay


class LiveSources:
    """The transcoders of a server, one per camera stream that needed one. Use on the event
    loop's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop  # None: the running loop at the first use
        self._transcoders: dict[tuple[str, str], Transcoder] = {}

    @contextlib.contextmanager
    def for_browser(
        self, camera_id: str, relays: Mapping[str, Relay], stream: str
    ) -> Iterator[Chosen]:
        """The relay for a browser viewer of ``relays[stream]`` while the block runs."""
        relay = relays[stream]
        if not _is_hevc(relay):
            yield Chosen(relay, stream, False)
            return
        for other, alt in relays.items():
            if other != stream and alt.info is not None and not _is_hevc(alt):
                yield Chosen(alt, other, False)
                return
        key = (camera_id, stream)
        tc = self._transcoders.get(key)
        if tc is None or tc.source is not relay:
            loop = self.loop or asyncio.get_running_loop()
            tc = self._transcoders[key] = Transcoder(relay, loop, f"{camera_id}/{stream}")
        out = tc.acquire()
        try:
            yield Chosen(out, stream, True)
        finally:
            tc.release()

    def stop(self) -> None:
        """Stop every transcoder (the server is stopping)."""
        for tc in self._transcoders.values():
            if tc.running:
                tc.stop()
        self._transcoders.clear()


def _is_hevc(relay: Relay) -> bool:
    info = relay.info
    return info is not None and info.video.codec == HEVC
