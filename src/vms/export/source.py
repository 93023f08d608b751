"""What an export reads of a camera: the playback plan of the range and its range stream
(:mod:`vms.playback.plan`, :mod:`vms.playback.stream`), as a :class:`~vms.export.jobs.RangeStream`.

The plan is made when the job is (a camera with nothing recorded in the range refuses the
job, 404); its files are read when the job runs.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

from vms.catalog.store import Catalog
from vms.clock import Clock
from vms.errors import Kind, VmsError
from vms.export.jobs import RangeStream, Source
from vms.media import MAIN, SUB
from vms.playback.plan import OpenSegments, plan
from vms.playback.stream import RangeStream as Stream
from vms.recording.storage import Storage

STREAMS = {"main": MAIN, "sub": SUB}


def playback_source(
    catalog: Catalog, open_files: OpenSegments, storage: Storage, clock: Clock, max_range_us: int
) -> Source:
    def source(camera_id: str, stream: str, start_us: int, end_us: int) -> RangeStream:
        number = STREAMS.get(stream)
        if number is None:
            raise VmsError(Kind.INVALID_ARGUMENT, f"stream: {stream!r} is not main or sub")
        p = plan(catalog, open_files, camera_id, number, start_us, end_us,
                 max_range_us=max_range_us, storage=storage, now_us=clock.wall_us())  # fmt: skip
        chunks = _closable(Stream(p).chunks())
        return RangeStream(
            chunks, p.offset_us / 1e6, p.first_us,
            gaps=[(g.start_us, g.end_us) for g in p.gaps], close=chunks.close,
        )  # fmt: skip

    return source


def _closable(chunks: Iterator[bytes]) -> Generator[bytes]:
    # Closing the generator closes the stream's, and with it the file it has open.
    yield from chunks
