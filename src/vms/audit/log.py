"""The audit log: append entries to the hash chain, query them, checkpoint and verify the chain.

Every append is one transaction that reads the last entry and inserts the next, serialized so
that two appends never chain onto the same entry: on PostgreSQL by a transaction-scoped
advisory lock (across processes and hosts), on SQLite by taking the database's write lock
before the read (``BEGIN IMMEDIATE``), which another process's append then waits for. See
docs/design/audit.md.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from vms.audit.checkpoint import Checkpoint, Checkpoints
from vms.audit.entry import (
    GENESIS,
    Entry,
    check_fields,
    details_text,
    entry_hash,
)
from vms.audit.schema import audit_log
from vms.audit.verify import PRUNED, VerifyReport, verify_chain
from vms.catalog.store import Catalog
from vms.clock import Clock, SystemClock
from vms.errors import Kind, VmsError

log = logging.getLogger(__name__)

MAX_LIMIT = 1000
# pg_advisory_xact_lock's key for appends: b"vmsaudit" read as a big-endian int64.
_PG_LOCK_KEY = int.from_bytes(b"vmsaudit", "big")


def _entry(row: Any) -> Entry:
    return Entry(
        seq=row.seq, at_us=row.at_us, actor=row.actor, actor_ip=row.actor_ip,
        action=row.action, target=row.target, details=json.loads(row.details),
        prev_hash=row.prev_hash, hash=row.hash,
    )  # fmt: skip


class AuditLog:
    """The audit trail in ``catalog``, with its key and checkpoint file in ``data_dir``.

    A checkpoint is written after every ``checkpoint_every`` entries, and by
    :meth:`run_checkpoints` (or :meth:`maybe_checkpoint`) once ``checkpoint_seconds`` have
    passed with entries not yet under one. Thread-safe.
    """

    def __init__(
        self,
        catalog: Catalog,
        data_dir: Path,
        clock: Clock | None = None,
        *,
        checkpoint_every: int = 100,
        checkpoint_seconds: float = 60.0,
    ) -> None:
        if checkpoint_every < 1 or checkpoint_seconds <= 0:
            raise VmsError(Kind.INVALID_ARGUMENT, "audit checkpoints: every >= 1, seconds > 0")
        self.catalog = catalog
        self.clock: Clock = clock or SystemClock()
        self.checkpoints = Checkpoints(data_dir)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self._postgres = catalog.engine.dialect.name == "postgresql"
        self._cp_lock = threading.Lock()
        self._cp_seq: int | None = None  # the newest checkpoint's seq; read from the file once
        self._cp_mono = self.clock.monotonic()
        self.head_seq = 0  # the newest seq this process appended or saw (for metrics)

    def __repr__(self) -> str:
        return f"AuditLog({self.catalog.safe_url!r})"

    # --- appending ---------------------------------------------------------------------

    def append(
        self,
        actor: str,
        action: str,
        target: str = "",
        details: Mapping[str, Any] | None = None,
        ip: str | None = None,
    ) -> Entry:
        """Record one act. Refuses (``INVALID_ARGUMENT``) details that name a secret."""
        check_fields(actor, action, target, ip)
        text = details_text(details)
        with self.catalog.write() as c:
            self._serialize(c)
            entry = self._insert(c, actor, action, target, text, ip)
        self._appended(entry.seq, entry.hash)
        return entry

    def _serialize(self, c: Connection) -> None:
        """Make this transaction the only appender until it ends; its first statement."""
        if self._postgres:
            c.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
        else:
            # The trap: pysqlite begins a transaction only at the first INSERT, so the read of
            # the last entry would run unlocked and two processes would chain onto the same
            # entry. BEGIN IMMEDIATE takes the write lock now; busy_timeout waits for it.
            c.exec_driver_sql("BEGIN IMMEDIATE")

    def _insert(
        self, c: Connection, actor: str, action: str, target: str, text: str, ip: str | None
    ) -> Entry:
        last = c.execute(
            sa.select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
        ).first()
        seq, prev = (last.seq + 1, last.hash) if last else (1, GENESIS)
        at_us = self.clock.wall_us()
        digest = entry_hash(seq, at_us, actor, ip, action, target, text, prev)
        c.execute(
            audit_log.insert().values(
                seq=seq, at_us=at_us, actor=actor, actor_ip=ip, action=action, target=target,
                details=text, prev_hash=prev, hash=digest,
            )
        )  # fmt: skip
        return Entry(seq, at_us, actor, ip, action, target, json.loads(text), prev, digest)

    def _appended(self, seq: int, digest: str) -> None:
        self.head_seq = max(self.head_seq, seq)
        if seq - self._checkpoint_seq() >= self.checkpoint_every:
            self._checkpoint(seq, digest)

    # --- checkpoints -------------------------------------------------------------------

    @property
    def checkpoint_seq(self) -> int:
        """The newest checkpoint's seq (0 when none), for metrics."""
        return self._checkpoint_seq()

    def _checkpoint_seq(self) -> int:
        with self._cp_lock:
            if self._cp_seq is None:
                cps = self.checkpoints.read().checkpoints
                self._cp_seq = max((cp.seq for cp in cps), default=0)
            return self._cp_seq

    def _checkpoint(self, seq: int, digest: str) -> Checkpoint | None:
        with self._cp_lock:
            if self._cp_seq is not None and seq <= self._cp_seq:
                return None  # a later entry's checkpoint is already written
            cp = self.checkpoints.make(seq, digest, self.clock.wall_us())
            self.checkpoints.append(cp)
            self._cp_seq = seq
            self._cp_mono = self.clock.monotonic()
        log.info("%s", cp.line())
        return cp

    def checkpoint(self) -> Checkpoint | None:
        """Write a checkpoint of the head now, unless one covers it already."""
        head = self.head()
        if head is None:
            return None
        self.head_seq = max(self.head_seq, head.seq)
        if head.seq <= self._checkpoint_seq():
            return None
        return self._checkpoint(head.seq, head.hash)

    def maybe_checkpoint(self) -> Checkpoint | None:
        """A checkpoint if ``checkpoint_seconds`` have passed since the last one."""
        if self.clock.monotonic() - self._cp_mono < self.checkpoint_seconds:
            return None
        return self.checkpoint()

    def run_checkpoints(self, stop: threading.Event) -> None:
        """Checkpoint every ``checkpoint_seconds`` while there are new entries, until ``stop``
        is set; then once more, so a clean stop leaves the whole log under a checkpoint."""
        while not stop.wait(self.checkpoint_seconds / 4):
            try:
                self.maybe_checkpoint()
            except VmsError as e:
                log.warning("audit checkpoint failed: %s", e)
        try:
            self.checkpoint()
        except VmsError as e:
            log.warning("audit checkpoint at stop failed: %s", e)

    # --- reading -----------------------------------------------------------------------

    def head(self) -> Entry | None:
        with self.catalog.read() as c:
            row = c.execute(sa.select(audit_log).order_by(audit_log.c.seq.desc()).limit(1)).first()
        return _entry(row) if row else None

    def query(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        after_seq: int | None = None,
        limit: int = 100,
        newest: bool = False,
    ) -> list[Entry]:
        """Entries in ``seq`` order matching every filter given: ``action`` is a prefix
        (``camera`` or ``camera.`` matches ``camera.update``), ``since_us`` inclusive,
        ``until_us`` exclusive, ``after_seq`` the cursor of the previous page. ``newest``
        takes the newest ``limit`` matching entries (still returned oldest first)."""
        # One beyond MAX_LIMIT: a page of MAX_LIMIT asks for one more to know if another follows.
        if not 1 <= limit <= MAX_LIMIT + 1:
            raise VmsError(Kind.INVALID_ARGUMENT, f"limit: 1 to {MAX_LIMIT}")
        q = sa.select(audit_log)
        if actor is not None:
            q = q.where(audit_log.c.actor == actor)
        if action:
            prefix = action.rstrip(".")
            q = q.where(
                sa.or_(
                    audit_log.c.action == prefix,
                    audit_log.c.action.startswith(prefix + ".", autoescape=True),
                )
            )
        if target is not None:
            q = q.where(audit_log.c.target == target)
        if since_us is not None:
            q = q.where(audit_log.c.at_us >= since_us)
        if until_us is not None:
            q = q.where(audit_log.c.at_us < until_us)
        if after_seq is not None:
            q = q.where(audit_log.c.seq > after_seq)
        order = audit_log.c.seq.desc() if newest else audit_log.c.seq
        with self.catalog.read() as c:
            rows = c.execute(q.order_by(order).limit(limit)).all()
        entries = [_entry(r) for r in rows]
        return entries[::-1] if newest else entries

    # --- the log's own retention -------------------------------------------------------

    def prune(self, before_us: int, actor: str = "system") -> int:
        """Delete the entries older than ``before_us`` (never the newest) and, in the same
        transaction, append ``audit.pruned`` naming the last one deleted; then checkpoint, so
        that the prune is covered (verify trusts no prune entry newer than every checkpoint).
        Returns how many entries were deleted."""
        with self.catalog.write() as c:
            self._serialize(c)
            head = c.execute(sa.select(sa.func.max(audit_log.c.seq))).scalar()
            through = c.execute(
                sa.select(audit_log.c.seq, audit_log.c.hash)
                .where(audit_log.c.at_us < before_us)
                .where(audit_log.c.seq < (head or 0))
                .order_by(audit_log.c.seq.desc())
                .limit(1)
            ).first()
            if through is None:
                return 0
            count = c.execute(audit_log.delete().where(audit_log.c.seq <= through.seq)).rowcount
            details = {"through_seq": through.seq, "through_hash": through.hash, "entries": count}
            entry = self._insert(c, actor, PRUNED, "", details_text(details), None)
        self._appended(entry.seq, entry.hash)
        self.checkpoint()
        return int(count)

    # --- verification ------------------------------------------------------------------

    def verify(self, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
        """Check the whole chain and the checkpoints (docs/design/audit.md, "Verification")."""
        return verify_chain(
            self.catalog, self.checkpoints.read(), self.checkpoint_every, progress=progress
        )
