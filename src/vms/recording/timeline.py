"""What each camera stream has recorded, in memory: the segments' intervals, sorted, so that
the runs and gaps of a window cost a few bisects instead of a catalog query and a row per
segment (docs/design/storage.md, "Timeline: the recorded intervals in memory").

A :class:`Timeline` mirrors one camera stream's rows: closed segments (what is served),
quarantined ones (counted, never served) and open ones (how far those are written is the
writers' to say). :class:`Timelines` loads each one lazily from the catalog and keeps it current
from the catalog's change reports (:meth:`vms.catalog.store.Catalog.listen`). It also answers
how much of each part of a window is recorded (:meth:`Timeline.covered`: a scrub bar's density).

The trap is between a load and a change. The catalog reports a change after its commit, from
the writing thread; a request thread loading the timeline at that moment may or may not have
read the row. So a load holds the timeline's lock across its query (a report made meanwhile
waits, then applies), and every change is applied as an idempotent upsert or removal (applying
one the load already read changes nothing).

Readers take the same lock: ``insert`` and ``del`` on the arrays shift them, and a bisect made
across such a shift lands anywhere. :meth:`Timeline.window` hands back tuples it built under the
lock, never the arrays.

Segments of one camera stream are assumed not to overlap (``vms check`` reports those that do;
:meth:`vms.catalog.store.Catalog.overlapping` assumes it too): their ends are then sorted like
their starts, and both can be bisected.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import logging
import operator
import threading
from array import array
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from vms.catalog.store import OPEN, QUARANTINED, Catalog, SegmentChange

log = logging.getLogger(__name__)

# Segments closer than this are one run: rotation leaves no gap by construction, but a
# re-anchored wall clock may leave a few milliseconds.
RUN_GAP_US = 500_000


class Item(NamedTuple):
    """A block of closed segments that follow one another (``open`` False), or one open row
    (``open`` True: ``end_us`` is its start, ``segments`` 1, ``bytes`` 0), in start order."""

    start_us: int
    end_us: int
    id: int  # the first segment's
    segments: int
    bytes: int
    open: bool


class Window(NamedTuple):
    items: list[Item]
    quarantined: int  # quarantined segments in the window
    end_us: int  # where the window stops: its end, or where a page cut it
    # µs of closed segments between consecutive ``edges`` asked for (see Timeline.covered),
    # of the same moment as ``items``: an open row that closes meanwhile is in one or the other.
    covered: Sequence[int] = ()


class Timeline:
    """One camera stream's segment intervals (see the module's notes on threads)."""

    def __init__(self, camera_id: str, stream: int) -> None:
        self.camera_id, self.stream = camera_id, stream
        self.lock = threading.Lock()
        self.loaded = False
        self._clear()

    def _clear(self) -> None:
        # Closed segments, by start: 32 bytes each.
        self.starts, self.ends = array("q"), array("q")
        self.ids, self.bytes = array("q"), array("q")
        # Starts of the closed segments that begin a run: more than RUN_GAP_US after the
        # previous closed one's end (the first one is never listed: a window starts a run anyway).
        self.heads = array("q")
        self.q_starts, self.q_ends, self.q_ids = array("q"), array("q"), array("q")
        self.opens: list[tuple[int, int]] = []  # (start_us, id)

    def __len__(self) -> int:
        return len(self.starts) + len(self.q_starts) + len(self.opens)

    # --- changes (the caller holds the lock) --------------------------------------------

    def load(self, catalog: Catalog) -> None:
        """Read the camera stream's rows (no blobs). The caller holds the lock."""
        self._clear()
        for start, seg_id, state, end, nbytes in catalog.intervals(self.camera_id, self.stream):
            if state == OPEN:
                self.opens.append((start, seg_id))
            elif state == QUARANTINED:
                self.q_starts.append(start)
                self.q_ends.append(end)
                self.q_ids.append(seg_id)
            else:
                if self.starts and start - self.ends[-1] > RUN_GAP_US:
                    self.heads.append(start)
                self.starts.append(start)
                self.ends.append(end)
                self.ids.append(seg_id)
                self.bytes.append(nbytes)
        self.opens.sort()
        self.loaded = True

    def apply(self, c: SegmentChange) -> None:
        """One reported change, idempotent (see the module's notes)."""
        if c.kind == "open":
            if (c.start_us, c.id) not in self.opens:
                bisect.insort(self.opens, (c.start_us, c.id))
            return
        self._drop_open(c.start_us, c.id)
        if c.kind == "close":
            self.closed(c.id, c.start_us, c.end_us, c.bytes)
        elif c.kind == "quarantine":
            end = self._remove_closed(c.start_us, c.id)  # its end: the report does not carry it
            i = _find(self.q_starts, self.q_ids, c.start_us, c.id)
            if end is not None and i < 0:
                i = -i - 1
                self.q_starts.insert(i, c.start_us)
                self.q_ids.insert(i, c.id)
                self.q_ends.insert(i, end)
        elif c.kind == "delete":
            if self._remove_closed(c.start_us, c.id) is None:
                i = _find(self.q_starts, self.q_ids, c.start_us, c.id)
                if i >= 0:
                    del self.q_starts[i], self.q_ends[i], self.q_ids[i]

    def closed(self, seg_id: int, start_us: int, end_us: int, nbytes: int) -> None:
        """A closed segment: added, or its end and size replaced when it is there."""
        i = _find(self.starts, self.ids, start_us, seg_id)
        if i >= 0:
            self.ends[i], self.bytes[i] = end_us, nbytes
        else:
            i = -i - 1
            self.starts.insert(i, start_us)
            self.ends.insert(i, end_us)
            self.ids.insert(i, seg_id)
            self.bytes.insert(i, nbytes)
        self._set_head(i)
        self._set_head(i + 1)

    def _drop_open(self, start_us: int, seg_id: int) -> None:
        if self.opens and (start_us, seg_id) in self.opens:
            self.opens.remove((start_us, seg_id))

    def _remove_closed(self, start_us: int, seg_id: int) -> int | None:
        """Remove a closed segment; returns its end, None when it is not there."""
        i = _find(self.starts, self.ids, start_us, seg_id)
        if i < 0:
            return None
        end = self.ends[i]
        h = bisect.bisect_left(self.heads, start_us)
        if h < len(self.heads) and self.heads[h] == start_us:
            del self.heads[h]
        del self.starts[i], self.ends[i], self.ids[i], self.bytes[i]
        self._set_head(i)  # the next one follows another now
        return end

    def _set_head(self, i: int) -> None:
        """Whether closed segment ``i`` begins a run, after its neighbours changed."""
        if i >= len(self.starts):
            return
        start = self.starts[i]
        want = i > 0 and start - self.ends[i - 1] > RUN_GAP_US
        h = bisect.bisect_left(self.heads, start)
        present = h < len(self.heads) and self.heads[h] == start
        if want and not present:
            self.heads.insert(h, start)
        elif present and not want:
            del self.heads[h]

    # --- reading (the caller holds the lock) ---------------------------------------------

    def window(self, start_us: int, end_us: int, limit: int) -> Window:
        """What overlaps ``[start_us, end_us)``, as :meth:`Catalog.overlapping` would find it
        with ``limit`` rows at most: when it finds that many and the last starts after
        ``start_us``, the window ends where that last one starts (the next page begins there)."""
        starts, ends = self.starts, self.ends
        i0 = bisect.bisect_right(ends, start_us)
        i1 = bisect.bisect_left(starts, end_us, i0)
        q0 = bisect.bisect_right(self.q_ends, start_us)
        q1 = bisect.bisect_left(self.q_starts, end_us, q0)
        opens = [o for o in self.opens if o[0] < end_us]
        if (i1 - i0) + (q1 - q0) + len(opens) >= limit:
            keys = heapq.merge(
                zip(starts[i0:i1], self.ids[i0:i1], strict=True),
                zip(self.q_starts[q0:q1], self.q_ids[q0:q1], strict=True),
                opens,
            )
            last = next(itertools.islice(keys, limit - 1, None))
            if last[0] > start_us:  # the next page starts with the row that did not fit
                end_us = last[0]
                i1 = bisect.bisect_left(starts, end_us, i0, i1)
                q1 = bisect.bisect_left(self.q_starts, end_us, q0, q1)
                opens = [o for o in opens if o[0] < end_us]
            else:
                # Every row read starts at or before the window (an open row left behind by a
                # failed file, a tiny limit): the catalog's page is those rows and ends at the
                # window's end. Keep only what sorts up to ``last``.
                after = (last[0], last[1] + 1)
                i1 = _position(starts, self.ids, *after, i0, i1)
                q1 = _position(self.q_starts, self.q_ids, *after, q0, q1)
                opens = [o for o in opens if o <= last]
        # Cut the closed segments into blocks where a run begins and where an open row falls.
        cuts = []
        if i1 > i0:
            h0 = bisect.bisect_right(self.heads, starts[i0])
            h1 = bisect.bisect_right(self.heads, starts[i1 - 1], h0)
            cuts = [bisect.bisect_left(starts, h, i0, i1) for h in self.heads[h0:h1]]
            cuts += [_position(starts, self.ids, s, oid, i0, i1) for s, oid in opens]
            cuts = sorted({c for c in cuts if i0 < c < i1})
        items = [Item(s, s, oid, 1, 0, True) for s, oid in opens]
        lo = i0
        for hi in [*cuts, i1] if i1 > i0 else []:
            items.append(
                Item(starts[lo], ends[hi - 1], self.ids[lo], hi - lo, sum(self.bytes[lo:hi]), False)
            )
            lo = hi
        items.sort(key=lambda it: (it.start_us, it.id))
        return Window(items, q1 - q0, end_us)

    def covered(self, edges: Sequence[int]) -> list[int]:
        """µs of closed segments in each ``[edges[k], edges[k + 1])`` (edges ascending): a
        density of the recording. Quarantined and open segments are not counted.

        One pass in C over the segments between the first and last edge (their durations,
        summed as they go), then two bisects an edge: a week of one-minute segments in 168
        buckets costs what slicing 10,000 numbers costs, not a loop over them in Python."""
        if len(edges) < 2:
            return []
        lo = bisect.bisect_right(self.ends, edges[0])
        hi = bisect.bisect_left(self.starts, edges[-1], lo)
        starts, ends = self.starts[lo:hi], self.ends[lo:hi]
        # before[m]: µs of the first m segments (segments never overlap, so ends are sorted).
        before = [0, *itertools.accumulate(map(operator.sub, ends, starts))]

        def recorded(t: int) -> int:  # µs recorded before t, from segment ``lo`` on
            m = bisect.bisect_right(ends, t)  # those wholly before t
            part = t - starts[m] if m < len(starts) and starts[m] < t else 0
            return before[m] + part

        marks = [recorded(t) for t in edges]
        return [b - a for a, b in itertools.pairwise(marks)]


def bucket_edges(start_us: int, end_us: int, buckets: int) -> list[int]:
    """The ``buckets + 1`` edges that cut ``[start_us, end_us)`` into equal parts (to the µs:
    the parts differ by a microsecond at most, and the last edge is ``end_us`` exactly)."""
    span = end_us - start_us
    return [start_us + span * k // buckets for k in range(buckets + 1)]


def add_cover(covered: list[int], edges: Sequence[int], start_us: int, end_us: int) -> None:
    """Add ``[start_us, end_us)`` to ``covered`` (µs between ``edges``, as
    :meth:`Timeline.covered` counts them): an open segment, as far as it is written."""
    k = max(bisect.bisect_right(edges, start_us) - 1, 0)
    while k < len(covered) and edges[k] < end_us:
        covered[k] += max(0, min(end_us, edges[k + 1]) - max(start_us, edges[k]))
        k += 1


def _find(starts: array[int], ids: array[int], start_us: int, seg_id: int) -> int:
    """Index of the segment, or ``-(insertion point) - 1`` when it is not there."""
    i = bisect.bisect_left(starts, start_us)
    while i < len(starts) and starts[i] == start_us:
        if ids[i] == seg_id:
            return i
        if ids[i] > seg_id:
            break
        i += 1
    return -i - 1


def _position(starts: array[int], ids: array[int], start_us: int, seg_id: int, lo: int,
              hi: int) -> int:  # fmt: skip
    """Where a row keyed ``(start_us, seg_id)`` falls among the closed segments ``[lo, hi)``."""
    i = bisect.bisect_left(starts, start_us, lo, hi)
    while i < hi and starts[i] == start_us and ids[i] < seg_id:
        i += 1
    return i


class Timelines:
    """Every loaded camera stream's :class:`Timeline`, kept current by the catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._lock = threading.Lock()
        self._timelines: dict[tuple[str, int], Timeline] = {}
        catalog.listen(self.changed)

    def _get(self, camera_id: str, stream: int) -> Timeline:
        key = (camera_id, stream)
        t = self._timelines.get(key)
        if t is None:
            with self._lock:
                t = self._timelines.setdefault(key, Timeline(camera_id, stream))
        return t

    def loaded(self, camera_id: str, stream: int) -> bool:
        t = self._timelines.get((camera_id, stream))
        return t is not None and t.loaded

    def load(self, camera_id: str, stream: int) -> None:
        """Read the camera stream's rows now unless they are (a catalog query: the caller may
        want it off its event loop; :meth:`window` loads too)."""
        t = self._get(camera_id, stream)
        with t.lock:
            if not t.loaded:
                t.load(self.catalog)  # under the lock: see the module's notes

    def window(
        self,
        camera_id: str,
        stream: int,
        start_us: int,
        end_us: int,
        limit: int,
        edges: Sequence[int] = (),
    ) -> Window:
        """What overlaps the window (:meth:`Timeline.window`); with ``edges``, also the µs of
        closed segments between them (:meth:`Timeline.covered`), under the same lock."""
        t = self._get(camera_id, stream)
        with t.lock:
            if not t.loaded:
                t.load(self.catalog)  # under the lock: see the module's notes
            found = t.window(start_us, end_us, limit)
            return found._replace(covered=t.covered(edges)) if edges else found

    def changed(self, changes: Iterable[SegmentChange]) -> None:
        """The catalog's report (any thread, after its commit)."""
        try:
            for c in changes:
                t = self._timelines.get((c.camera_id, c.stream))
                if t is None:
                    continue  # never asked for: loaded from the catalog when it is
                with t.lock:
                    if t.loaded:
                        t.apply(c)
        except Exception:
            log.exception("timeline change failed; every timeline is read again")
            self.invalidate()

    def invalidate(self, camera_id: str | None = None) -> None:
        """Forget the camera's timelines (every one without ``camera_id``): the next request
        reads them from the catalog again."""
        for (cam, _), t in list(self._timelines.items()):
            if camera_id is None or cam == camera_id:
                with t.lock:
                    t.loaded = False
                    t._clear()
