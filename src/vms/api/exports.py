"""Export routes: make an export job, follow it, cancel or delete it, download its files, and
the public key that checks its signature (docs/design/playback.md, "Export").

An export needs ``export`` on **every** camera it names (a camera the caller may not view is
404, one it may view but not export is 403). A job is seen by whoever made it, and by
administrators; another user's job is 404. A download needs the header credential of its
maker (or an admin), still holding ``export`` on its cameras; a one-camera export may also be
fetched with a media token for ``export`` on that camera (``?token=``), for a browser link.
Every creation, download, cancel and delete goes to the audit trail.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from vms.api import models
from vms.api.deps import ServerDep
from vms.api.errors import ERRORS, ErrorBody
from vms.api.guard import API_KEY_HEADER, Authenticated, AuthService, authenticate, check_camera
from vms.auth import Auth, Principal
from vms.auth.ratelimit import client_address
from vms.auth.rbac import Action
from vms.config import StreamName
from vms.errors import Kind, VmsError, unauthenticated
from vms.export import signing
from vms.export.jobs import FINISHED, MAX_CAMERAS, Job, State
from vms.server import Server
from vms.times import TIME_HELP, TIME_MAX_CHARS, invalid, iso, iso_or_none, parse_time

PREFIX = "/api/v1/exports"
PAGE_DEFAULT, PAGE_MAX = 100, 1000

router = APIRouter(prefix=PREFIX, tags=["exports"], responses=ERRORS)

ExportId = Annotated[
    str, Path(pattern=r"^[0-9a-f]{16}$", description="an export id, as its creation answered")
]
_CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".zip": "application/zip",
    ".json": "application/json",
    ".sig": "application/octet-stream",
}


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cameras: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=MAX_CAMERAS, description="camera ids; export on each is needed"
    )
    start: Annotated[str, Field(max_length=TIME_MAX_CHARS)] | int = Field(description=TIME_HELP)
    end: Annotated[str, Field(max_length=TIME_MAX_CHARS)] | int = Field(description=TIME_HELP)
    stream: StreamName = Field(StreamName.MAIN, description="main or sub")


class ExportOut(BaseModel):
    id: str
    state: State
    percent: float = Field(description="0 to 100")
    error: str | None = Field(description="why it failed")
    cameras: list[str]
    stream: str
    start_us: int
    start: str
    end_us: int
    end: str
    created_by: str
    created_us: int
    created: str
    started_us: int | None
    started: str | None
    finished_us: int | None
    finished: str | None
    file: str | None = Field(description="what a download gives: <camera>.mp4 or export.zip")
    files: list[str] = Field(description="every file offered: the media, manifest.json, .sig")
    size: int = Field(description="bytes of `file`")
    notes: list[str]
    download: str | None = Field(description="where to get `file` (add ?name= for the others)")

    @classmethod
    def of(cls, job: Job) -> ExportOut:
        done = job.state == State.DONE
        return cls(
            id=job.id, state=job.state, percent=job.percent, error=job.error,
            cameras=job.cameras, stream=job.stream,
            start_us=job.start_us, start=iso(job.start_us),
            end_us=job.end_us, end=iso(job.end_us),
            created_by=job.created_by, created_us=job.created_us, created=iso(job.created_us),
            started_us=job.started_us, started=iso_or_none(job.started_us),
            finished_us=job.finished_us, finished=iso_or_none(job.finished_us),
            file=job.file if done else None, files=job.files if done else [],
            size=job.size, notes=job.notes,
            download=f"{PREFIX}/{job.id}/file" if done else None,
        )  # fmt: skip


class PublicKeyOut(BaseModel):
    algorithm: str = Field(description="Ed25519")
    key_id: str = Field(description="SHA-256 of the raw key, hex: what manifests name")
    public_key: str = Field(description="the raw 32 bytes, base64")
    pem: str = Field(description="SubjectPublicKeyInfo PEM (openssl pkeyutl -verify)")


def _address(request: Request, auth: Auth) -> str:
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.get("x-forwarded-for"), auth.trusted_proxies)


def _mine(who: Principal, job: Job) -> bool:
    return who.holds(Action.ADMIN) or (
        job.created_by_id == who.user_id and job.created_by == who.name
    )


def _job(server: Server, who: Principal, export_id: str) -> Job:
    """The job, if the caller may see it; else 404, as if it did not exist."""
    job = server.exports.find(export_id)
    if job is None or not _mine(who, job):
        raise VmsError(Kind.NOT_FOUND, f"no export {export_id}")
    return job


def _audit(server: Server, request: Request, who: Principal, action: str, job: Job,
           **details: Any) -> None:  # fmt: skip
    server.audit.append(who.name, action, job.id, details, ip=_address(request, server.auth))


_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "Too many exports waiting"}
}


@router.post("", status_code=201, response_model=ExportOut, responses=_UNAVAILABLE)
def create_export(
    body: ExportRequest, request: Request, response: Response, server: ServerDep,
    who: Authenticated,
) -> ExportOut:  # fmt: skip
    """Queue an export of ``[start, end)`` of the cameras; it runs in the background. 404
    when a camera recorded nothing in the range."""
    for camera in body.cameras:
        check_camera(who, Action.EXPORT, camera)
    start_us = parse_time(str(body.start), 0, "start")
    end_us = parse_time(str(body.end), 0, "end")
    if end_us <= start_us:
        raise invalid("end", "must be after start")
    job = server.exports.create(
        body.cameras, start_us, end_us, body.stream.value, who.name, who.user_id
    )
    _audit(server, request, who, "export.created", job, cameras=job.cameras,
           start=iso(start_us), end=iso(end_us), stream=job.stream)  # fmt: skip
    response.headers["Location"] = f"{PREFIX}/{job.id}"
    return ExportOut.of(job)


@router.get("", response_model=models.Page[ExportOut])
async def list_exports(
    server: ServerDep,
    who: Authenticated,
    limit: Annotated[int, models.limit_query(PAGE_DEFAULT, PAGE_MAX)] = PAGE_DEFAULT,
    cursor: models.Cursor = None,
) -> models.Page[ExportOut]:
    """The caller's exports (an administrator's: everyone's), newest first. (On the event
    loop: the jobs are in memory.)"""
    jobs = [j for j in server.exports.jobs() if _mine(who, j)]
    if cursor is not None:
        pos = models.decode_cursor(cursor, {"created_us": int, "id": str})
        jobs = [j for j in jobs if (j.created_us, j.id) < (pos["created_us"], pos["id"])]
    page = jobs[:limit]
    nxt = None
    if len(jobs) > limit:
        nxt = models.encode_cursor({"created_us": page[-1].created_us, "id": page[-1].id})
    return models.Page[ExportOut](items=[ExportOut.of(j) for j in page], next=nxt)


@router.get("/public-key", response_model=PublicKeyOut)
async def public_key(server: ServerDep, _: Authenticated) -> PublicKeyOut:
    """The key that signs every export's manifest."""
    signer = server.exports.signer
    if signer is None:
        raise VmsError(Kind.UNAVAILABLE, "the server is starting: try again in a moment")
    return PublicKeyOut(
        algorithm=signing.ALGORITHM,
        key_id=signer.key_id,
        public_key=base64.b64encode(signing.raw(signer.public)).decode(),
        pem=signing.pem(signer.public),
    )


@router.get("/{export_id}", response_model=ExportOut)
async def get_export(export_id: ExportId, server: ServerDep, who: Authenticated) -> ExportOut:
    return ExportOut.of(_job(server, who, export_id))


@router.post(
    "/{export_id}/cancel",
    response_model=ExportOut,
    responses={409: {"model": ErrorBody, "description": "It has ended: nothing to cancel"}},
)
def cancel_export(
    export_id: ExportId, request: Request, server: ServerDep, who: Authenticated
) -> ExportOut:
    """Cancel a queued or running export: its state becomes ``cancelled``, its files go."""
    job = _job(server, who, export_id)
    if job.state in FINISHED:
        raise VmsError(Kind.CONFLICT, f"export {export_id} has ended ({job.state}): "
                                      "nothing to cancel")  # fmt: skip
    job = server.exports.cancel(export_id)
    _audit(server, request, who, "export.cancelled", job)
    return ExportOut.of(job)


@router.delete("/{export_id}", status_code=204, response_class=Response)
def delete_export(
    export_id: ExportId, request: Request, server: ServerDep, who: Authenticated
) -> Response:
    """Delete an export and its files, cancelling it first if it has not ended."""
    job = _job(server, who, export_id)
    if job.state not in FINISHED:
        job = server.exports.cancel(export_id)
        _audit(server, request, who, "export.cancelled", job)
    server.exports.delete(export_id)
    _audit(server, request, who, "export.deleted", job)
    return Response(status_code=204)


@router.get(
    "/{export_id}/file",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file",
            "content": {
                t: {"schema": {"type": "string", "format": "binary"}}
                for t in _CONTENT_TYPES.values()
            },
        },
    },
)
def download_export(
    export_id: ExportId,
    request: Request,
    server: ServerDep,
    auth: AuthService,
    name: Annotated[
        str | None, Query(max_length=64, description="one of `files`; default `file`")
    ] = None,
    token: Annotated[
        str | None, Query(max_length=4096, description="a media token (one-camera exports)")
    ] = None,
) -> FileResponse:
    """A file of a finished export: by default the media (``<camera>.mp4`` or the zip)."""
    headers = request.headers
    if token is not None and "authorization" not in headers and API_KEY_HEADER not in headers:
        job = server.exports.find(export_id)
        if job is None or len(job.cameras) != 1:
            raise unauthenticated("the media token is not valid for this export")
        who = auth.media(token, job.cameras[0], Action.EXPORT)
        request.state.principal = who
    else:
        who = authenticate(request, auth)
    job = _job(server, who, export_id)
    for camera in job.cameras:  # still allowed?
        check_camera(who, Action.EXPORT, camera)
    chosen = name or job.file or ""
    path = server.exports.path(job, chosen)
    _audit(server, request, who, "export.downloaded", job, file=chosen)
    media_type = _CONTENT_TYPES.get(path.suffix, "application/octet-stream")
    return FileResponse(path, media_type=media_type, filename=chosen)
