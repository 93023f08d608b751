"""``GET /api/v1/audit`` and ``GET /api/v1/audit/verify``: the audit trail over HTTP.

The router reads the :class:`~vms.audit.log.AuditLog` from ``request.app.state.server.audit``
through :func:`audit_log`; whoever mounts it guards it (administrators only). Pages go forward
in ``seq`` order: ``after_seq`` is the previous page's ``next_after_seq``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from vms.api.errors import responses
from vms.audit.entry import Entry
from vms.audit.log import MAX_LIMIT, AuditLog
from vms.audit.verify import VerifyReport
from vms.errors import Kind, VmsError
from vms.times import TIME_HELP, TIME_MAX_CHARS, iso, parse_time


def audit_log(request: Request) -> AuditLog:
    """The running server's audit log; 503 while it has none (not started yet)."""
    server = getattr(request.app.state, "server", None)
    audit = getattr(server, "audit", None)
    if not isinstance(audit, AuditLog):
        raise VmsError(Kind.UNAVAILABLE, "the audit log is not available yet")
    return audit


Audit = Annotated[AuditLog, Depends(audit_log)]


class AuditEntry(BaseModel):
    seq: int
    at: str = Field(description="ISO 8601 UTC, microseconds")
    at_us: int
    actor: str
    actor_ip: str | None
    action: str
    target: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, e: Entry) -> AuditEntry:
        return cls(
            seq=e.seq, at=iso(e.at_us), at_us=e.at_us, actor=e.actor, actor_ip=e.actor_ip,
            action=e.action, target=e.target, details=e.details, prev_hash=e.prev_hash,
            hash=e.hash,
        )  # fmt: skip


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_after_seq: int | None = Field(
        description="pass as after_seq for the next page; null when this page is the last"
    )


class AuditFinding(BaseModel):
    kind: str
    seq: int | None
    detail: str


class AuditVerify(BaseModel):
    ok: bool
    entries: int
    first_seq: int | None
    head_seq: int | None
    head_hash: str | None
    checkpoints: int
    checkpoint_seq: int | None
    findings: list[AuditFinding]
    findings_left_out: int

    @classmethod
    def of(cls, r: VerifyReport) -> AuditVerify:
        return cls(
            ok=r.ok, entries=r.entries, first_seq=r.first_seq, head_seq=r.head_seq,
            head_hash=r.head_hash, checkpoints=r.checkpoints, checkpoint_seq=r.checkpoint_seq,
            findings=[AuditFinding(kind=f.kind, seq=f.seq, detail=f.detail) for f in r.findings],
            findings_left_out=r.findings_left_out,
        )  # fmt: skip


class AuditQuery(BaseModel):
    """Unknown parameters are refused: a misspelt filter must not answer everything."""

    model_config = ConfigDict(extra="forbid")

    actor: str | None = Field(None, max_length=200)
    action: str | None = Field(None, max_length=64, description="an action or its prefix")
    target: str | None = Field(None, max_length=255)
    since: str | None = Field(None, max_length=TIME_MAX_CHARS, description=TIME_HELP)
    until: str | None = Field(
        None, max_length=TIME_MAX_CHARS, description=f"{TIME_HELP}; exclusive"
    )
    after_seq: int | None = Field(None, ge=0, le=2**62)
    limit: int = Field(100, ge=1, le=MAX_LIMIT)


router = APIRouter(prefix="/api/v1/audit", tags=["audit"], responses=responses(400, 401, 403))


@router.get("", response_model=AuditPage)
def list_entries(audit: Audit, q: Annotated[AuditQuery, Query()]) -> AuditPage:
    """Entries oldest first, filtered; one page of at most ``limit``."""
    since, until = parse_time(q.since, None, "since"), parse_time(q.until, None, "until")
    entries = audit.query(
        actor=q.actor, action=q.action, target=q.target, since_us=since, until_us=until,
        after_seq=q.after_seq, limit=q.limit + 1,
    )  # fmt: skip
    page = entries[: q.limit]
    cursor = page[-1].seq if len(entries) > q.limit else None
    return AuditPage(entries=[AuditEntry.of(e) for e in page], next_after_seq=cursor)


@router.get("/verify", response_model=AuditVerify)
def verify(audit: Audit) -> AuditVerify:
    """Checks the whole chain and the checkpoints: reads every entry."""
    return AuditVerify.of(audit.verify())
