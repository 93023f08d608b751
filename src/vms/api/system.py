"""The server as a whole: ``/healthz`` (for a load balancer or a supervisor), the storage roots,
the server's own numbers (``/api/v1/system``: version and the figures of ``/metrics`` that no
other JSON route gives, for the web client) and the Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

import vms
from vms import metrics
from vms.api import models
from vms.api.deps import ServerDep
from vms.api.errors import responses
from vms.api.guard import Admin, Authenticated
from vms.health import State
from vms.recording.storage import Root
from vms.times import iso

router = APIRouter(tags=["system"])


def root_health(root: Root) -> str:
    """``ok``, why the root is refused, or ``degraded: <why>`` (usable, not as configured)."""
    if not root.usable:
        return root.error or "not usable"
    return f"degraded: {root.warning}" if root.warning else "ok"


@router.get("/healthz", response_model=models.Health)
def healthz(server: ServerDep) -> models.Health:
    roots = {r.name: root_health(r) for r in server.storage.roots}
    status = "ok" if all(v == "ok" for v in roots.values()) else "degraded"
    return models.Health(status=status, recording=server.started, roots=roots)


@router.get("/api/v1/storage", response_model=models.Storage, responses=responses(401))
def storage(server: ServerDep, _: Authenticated) -> models.Storage:
    out = []
    for r in server.storage.roots:
        known = r.usable and r.id is not None
        out.append(
            models.StorageRoot(
                name=r.name,
                path=str(r.path),
                usable=r.usable,
                state="refused" if not r.usable else ("degraded" if r.warning else "ok"),
                error=r.error,
                warning=r.warning,
                bytes_deleted_early=r.bytes_deleted_early,
                bytes_used=r.used_bytes if known else None,
                bytes_free=r.free_bytes() if known else None,
                max_bytes=r.config.max_bytes if known else None,
                min_free_bytes=r.config.min_free_bytes if known else None,
            )
        )
    return models.Storage(roots=out)


@router.get("/api/v1/system", response_model=models.SystemInfo, responses=responses(401))
def system(server: ServerDep, _: Authenticated) -> models.SystemInfo:
    """Version and the server-wide figures. (In a worker thread: the audit checkpoint is read
    from the catalog the first time.)"""
    by_state = dict.fromkeys(State, 0)
    for cam in server.cameras:
        by_state[cam.health.state] += 1
    now = server.clock.wall_us()
    return models.SystemInfo(
        version=vms.__version__,
        now_us=now,
        now=iso(now),
        recording=server.started,
        cameras=len(server.cameras),
        cameras_by_state=by_state,
        retention_deleted_bytes=server.retention.deleted_bytes,
        reader_longest_round_s=server.reactor.max_round_s,
        audit_head_seq=server.audit.head_seq,
        audit_checkpoint_seq=server.audit.checkpoint_seq,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **responses(401, 403),
    },
)
def prometheus(server: ServerDep, _: Admin) -> Response:
    return Response(metrics.render(server), media_type=metrics.CONTENT_TYPE)
