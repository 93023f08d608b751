"""Verification of the audit chain against itself and against the signed checkpoints.

One pass over the table in ``seq`` order, in batches, finds:

- ``edited``: an entry whose stored hash is not the hash of its fields;
- ``removed``: a gap in ``seq`` (the missing range is named), or the oldest entries gone with no
  ``audit.pruned`` entry under a checkpoint to account for them;
- ``broken``: ``prev_hash`` not the previous entry's hash with no gap (an entry rewritten
  together with its own hash, or entries re-inserted);
- ``rewritten``: an entry whose hash is not the one a checkpoint signed;
- ``truncated``: the newest checkpoint names a ``seq`` beyond the table's head;
- ``checkpoint``: a checkpoint line that does not verify, or no checkpoint where there must be.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Callable

import sqlalchemy as sa

from vms.audit.checkpoint import Checkpoint, ReadResult
from vms.audit.entry import GENESIS, entry_hash
from vms.audit.schema import audit_log
from vms.catalog.store import Catalog

BATCH = 2000
MAX_FINDINGS = 1000
PRUNED = "audit.pruned"


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # edited, removed, broken, rewritten, truncated, checkpoint
    seq: int | None
    detail: str

    def text(self) -> str:
        where = f"seq {self.seq}: " if self.seq is not None else ""
        return f"{self.kind.upper():<10} {where}{self.detail}"


@dataclasses.dataclass(slots=True)
class VerifyReport:
    entries: int = 0
    first_seq: int | None = None
    head_seq: int | None = None
    head_hash: str | None = None
    checkpoints: int = 0
    checkpoint_seq: int | None = None  # the newest valid checkpoint's
    findings: list[Finding] = dataclasses.field(default_factory=list)
    findings_left_out: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, kind: str, seq: int | None, detail: str) -> None:
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(Finding(kind, seq, detail))
        else:
            self.findings_left_out += 1


def verify_chain(
    catalog: Catalog,
    checkpoints: ReadResult,
    checkpoint_every: int,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    report = VerifyReport()
    for problem in checkpoints.problems:
        report.add("checkpoint", None, problem)
    by_seq: dict[int, Checkpoint] = {cp.seq: cp for cp in checkpoints.checkpoints}
    newest = max(checkpoints.checkpoints, key=lambda cp: cp.seq, default=None)
    report.checkpoints = len(checkpoints.checkpoints)
    report.checkpoint_seq = newest.seq if newest else None

    with catalog.read() as c:
        total = int(c.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one())
    if progress:
        progress(0, total)
    prev: tuple[int, str] | None = None  # (seq, stored hash) of the previous entry
    after = 0
    while True:
        with catalog.read() as c:
            rows = c.execute(
                sa.select(audit_log)
                .where(audit_log.c.seq > after)
                .order_by(audit_log.c.seq)
                .limit(BATCH)
            ).all()
        if not rows:
            break
        for r in rows:
            if prev is None:
                report.first_seq = r.seq
                _check_start(catalog, r.seq, r.prev_hash, newest, report)
            else:
                p_seq, p_hash = prev
                if r.seq != p_seq + 1:
                    missing = f"{p_seq + 1}" if r.seq == p_seq + 2 else f"{p_seq + 1}..{r.seq - 1}"
                    report.add("removed", r.seq, f"entries {missing} are missing")
                elif r.prev_hash != p_hash:
                    report.add(
                        "broken", r.seq,
                        f"prev_hash does not match the hash of entry {p_seq}: one of the two was "
                        "rewritten along with its hash, or entries were re-inserted",
                    )  # fmt: skip
            digest = entry_hash(
                r.seq, r.at_us, r.actor, r.actor_ip, r.action, r.target, r.details, r.prev_hash
            )
            if digest != r.hash:
                report.add(
                    "edited", r.seq, f"{r.action} {r.target!r}: the fields do not match its hash"
                )
            cp = by_seq.get(r.seq)
            if cp is not None and cp.head != r.hash:
                report.add(
                    "rewritten", r.seq,
                    f"its hash is not the one the checkpoint of {_iso(cp.at_us)} signed: the "
                    "chain was recomputed from here or earlier",
                )  # fmt: skip
            prev = (r.seq, r.hash)
            report.entries += 1
        after = rows[-1].seq
        if progress:
            progress(report.entries, max(total, report.entries))

    if prev is not None:
        report.head_seq, report.head_hash = prev
    head = report.head_seq or 0
    if newest is not None and head < newest.seq:
        report.add(
            "truncated", newest.seq,
            f"the checkpoint of {_iso(newest.at_us)} names entry {newest.seq}, the log ends at "
            f"{head}: entries {head + 1}..{newest.seq} were removed",
        )  # fmt: skip
    if newest is None and head >= checkpoint_every and not checkpoints.problems:
        where = "is missing" if not checkpoints.file_exists else "holds none"
        report.add(
            "checkpoint", None,
            f"the log has {head} entries but the checkpoint file {where}: it was deleted or "
            "emptied, or the log was filled without the server",
        )  # fmt: skip
    return report


def _check_start(
    catalog: Catalog, first: int, prev_hash: str, newest: Checkpoint | None, report: VerifyReport
) -> None:
    """The first entry is entry 1, or an ``audit.pruned`` entry under a checkpoint says the
    entries before it were pruned: a prune entry newer than every checkpoint could have been
    appended by whoever removed the entries."""
    if first == 1:
        if prev_hash != GENESIS:
            report.add("broken", 1, "the first entry does not start the chain")
        return
    with catalog.read() as c:
        rows = c.execute(
            sa.select(audit_log.c.seq, audit_log.c.details).where(audit_log.c.action == PRUNED)
        ).all()
    for row in rows:
        try:
            d = json.loads(row.details)
        except ValueError:
            continue  # found as edited, if it is
        if not isinstance(d, dict) or d.get("through_seq") != first - 1:
            continue
        if d.get("through_hash") != prev_hash:
            continue
        if newest is None or row.seq > newest.seq:
            report.add(
                "removed", first,
                f"entries 1..{first - 1} are gone; the prune entry {row.seq} that accounts for "
                "them is newer than every checkpoint, so it proves nothing",
            )  # fmt: skip
        return
    report.add("removed", first, f"entries 1..{first - 1} are gone and no prune accounts for them")


def _iso(at_us: int) -> str:
    t = datetime.datetime.fromtimestamp(at_us / 1e6, datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")
