"""HLS (RFC 8216) VOD playlists of a playback plan whose media are byte ranges of the stored
segment files: nothing is copied or remuxed, a player fetches the very bytes the recorder wrote.

One media segment per span of fragments from a keyframe to the next (contiguous bytes of one
file, so one ``EXT-X-BYTERANGE``), so a player can start at any of them. A run's files share one
init segment, byte for byte (docs/design/storage.md), so ``EXT-X-MAP`` names the first file's
once per run; a new run (new decode time line or new codec parameters) and a gap between runs
each start with ``EXT-X-DISCONTINUITY``. ``EXT-X-PROGRAM-DATE-TIME`` labels wall time at each
run and each file, which is how players and the web client map the time line back to the clock.

Trap: decode times inside a run are the run's own (they do not start at 0). hls.js and ffmpeg
follow them; what they must not see is time going back without a discontinuity, which is why
every run begins with one, even one that starts where the last ended.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from vms.playback.plan import Frag, Piece, Plan
from vms.times import iso

VERSION = 7  # EXT-X-MAP in a playlist without I-frames only, byte ranges, fMP4

# Where a segment file is served: (segment id) -> URI, relative to the playlist or absolute.
SegmentUri = Callable[[int], str]


def spans(piece: Piece) -> Iterator[list[Frag]]:
    """The piece's fragments grouped keyframe to keyframe (a first group without a keyframe
    only when the piece does not start with one, which the plan never does)."""
    group: list[Frag] = []
    for f in piece.fragments():
        if f.keyframe and group:
            yield group
            group = []
        group.append(f)
    if group:
        yield group


def playlist(plan: Plan, uri: SegmentUri) -> str:
    """The playlist text for ``plan``; ``uri`` names each segment file."""
    body: list[str] = []
    longest = 1.0
    for run in plan.runs:
        pieces = plan.pieces_of(run)
        if run.index > 0:
            body.append("#EXT-X-DISCONTINUITY")
        head = pieces[0]
        body.append(f'#EXT-X-MAP:URI="{uri(head.segment_id)}",BYTERANGE="{head.init_size}@0"')
        for piece in pieces:
            body.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(piece.start_us)}")
            for group in spans(piece):
                seconds = sum(f.duration for f in group) / piece.timescale
                longest = max(longest, seconds)
                size = sum(f.size for f in group)
                body.append(f"#EXTINF:{seconds:.6f},")
                body.append(f"#EXT-X-BYTERANGE:{size}@{group[0].offset}")
                body.append(uri(piece.segment_id))
    head_lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{math.ceil(longest)}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-DISCONTINUITY-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    if plan.offset_us:
        # Where the instant asked for is, from the first media segment's start.
        head_lines.append(f"#EXT-X-START:TIME-OFFSET={plan.offset_us / 1e6:.6f},PRECISE=YES")
    return "\n".join([*head_lines, *body, "#EXT-X-ENDLIST", ""])


def _pdt(us: int) -> str:
    """EXT-X-PROGRAM-DATE-TIME wants milliseconds and an explicit zone."""
    text = iso(us)
    if "." in text:
        whole, frac = text.rstrip("Z").split(".")
        return f"{whole}.{frac[:3].ljust(3, '0')}Z"
    return text.replace("Z", ".000Z")
