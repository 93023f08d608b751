"""The API's request and response bodies, and its one page shape.

Times follow :mod:`vms.times`: each instant twice, ``<name>_us`` (integer µs since the
epoch) and ``<name>`` (ISO 8601 UTC). Lists come as a :class:`Page`: ``items`` and ``next``,
an opaque cursor to pass back as ``cursor`` for the following page (``null`` on the last).

Camera passwords are write-only: a request may carry one, a response says only
``has_password``. Requests refuse unknown fields, so a misspelt field is an error rather than a
setting silently left at its default.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from vms.config import (
    CAMERA_ID_PATTERN,
    RecordMode,
    StreamConfig,
    StreamName,
    Transport,
    check_camera_url,
)
from vms.detection_config import DetectConfig
from vms.health import State
from vms.times import invalid, iso, iso_or_none

T = TypeVar("T")

NAME_MAX_CHARS = 200
CREDENTIAL_MAX_CHARS = 256
CURSOR_MAX_CHARS = 512


# --- pages -------------------------------------------------------------------------------


class Page(BaseModel, Generic[T]):
    """One page of a list, oldest or lowest first; ``next`` is null on the last page."""

    items: list[T]
    next: str | None = Field(description="pass as `cursor` for the next page; null: no more")


Cursor = Annotated[
    str | None,
    Query(max_length=CURSOR_MAX_CHARS, description="`next` of the previous page"),
]


def limit_query(default: int, most: int) -> Any:
    return Query(ge=1, le=most, description=f"items per page, at most {most} (default {default})")


def encode_cursor(data: dict[str, Any]) -> str:
    """An opaque cursor: the position, as URL-safe base64 of JSON (not a secret, not signed:
    a forged cursor only names another position a client could ask for anyway)."""
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, keys: dict[str, type]) -> dict[str, Any]:
    """The position in ``cursor``, which must hold exactly ``keys`` of those types; a 400 on
    ``cursor`` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (ValueError, binascii.Error):
        data = None
    if (
        not isinstance(data, dict)
        or set(data) != set(keys)
        or not all(type(data[k]) is t for k, t in keys.items())
    ):
        raise invalid("cursor", "not a cursor this API gave (pass `next` back as it was)")
    return data


# --- cameras -----------------------------------------------------------------------------


class Stream(BaseModel):
    url: str
    transport: Transport


class CameraHealth(BaseModel):
    state: State
    since_us: int
    since: str
    last_error: str | None
    previous_error: str | None
    error_cleared_us: int | None
    error_cleared: str | None
    fps: float
    bitrate_bps: int
    frames: int
    reconnects: int
    seconds_since_frame: float | None
    codec: str
    width: int
    height: int
    warnings: list[str]

    @classmethod
    def of(cls, snapshot: dict[str, Any]) -> CameraHealth:
        return cls(
            **snapshot,
            since=iso(snapshot["since_us"]),
            error_cleared=iso_or_none(snapshot["error_cleared_us"]),
        )


class RecordingStats(BaseModel):
    frames_written: int
    bytes_written: int
    segments: int
    frames_dropped: int


class Camera(BaseModel):
    """A camera as configured and as it runs. No password: ``has_password`` says if one is
    stored (or named by ``password_env`` in the configuration file)."""

    id: str
    name: str
    enabled: bool
    record: RecordMode
    record_streams: list[StreamName]
    retention_days: float | None
    event_retention_days: float | None
    roots: list[str] | None
    detect: DetectConfig | None
    main: Stream
    sub: Stream | None
    has_sub_stream: bool
    username: str | None
    has_password: bool
    health: CameraHealth
    recording: RecordingStats | None


CameraName = Annotated[str, Field(max_length=NAME_MAX_CHARS, title="Display name")]
Username = Annotated[str, Field(max_length=CREDENTIAL_MAX_CHARS, title="Camera user")]
Password = Annotated[
    SecretStr,
    Field(
        max_length=CREDENTIAL_MAX_CHARS,
        title="Camera password",
        description="write-only; left out: the stored one is kept; null: none",
    ),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CameraFields(_Request):
    """A camera's whole configuration (``PUT``). ``password`` left out keeps the stored one;
    ``null`` removes it."""

    name: CameraName = ""
    main: StreamConfig
    sub: StreamConfig | None = None
    username: Username | None = None
    password: Password | None = None
    enabled: bool = True
    record: RecordMode = RecordMode.CONTINUOUS
    record_streams: list[StreamName] = Field(default_factory=lambda: [StreamName.MAIN])
    retention_days: float | None = Field(None, gt=0)
    event_retention_days: float | None = Field(None, gt=0)
    roots: list[str] | None = None
    detect: DetectConfig | None = Field(None, title="Detection (none: not watched)")


class CameraCreate(CameraFields):
    """A new camera (``POST``)."""

    id: str = Field(pattern=CAMERA_ID_PATTERN, title="Camera id")


class CameraPatch(_Request):
    """What to change (``PATCH``); every field left out stays as it is, ``null`` clears
    ``sub``, ``username``, ``password``, ``retention_days`` and ``roots``."""

    name: CameraName | None = None
    main: StreamConfig | None = None
    sub: StreamConfig | None = None
    username: Username | None = None
    password: Password | None = None
    enabled: bool | None = None
    record: RecordMode | None = None
    record_streams: list[StreamName] | None = None
    retention_days: float | None = Field(None, gt=0)
    event_retention_days: float | None = Field(None, gt=0)
    roots: list[str] | None = None
    detect: DetectConfig | None = None


class ProbeRequest(_Request):
    """A stream to try before adding it as a camera."""

    url: str
    transport: Transport = Transport.TCP
    username: Username | None = None
    password: Password | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        return check_camera_url(url)


class ProbeVideo(BaseModel):
    codec: str
    width: int
    height: int
    fps: float | None


class ProbeAudio(BaseModel):
    codec: str
    sample_rate: int
    channels: int


class ProbeResult(BaseModel):
    """What the stream offers, or why it could not be opened (``ok`` false, ``error``)."""

    ok: bool
    error: str | None
    video: ProbeVideo | None
    audio: ProbeAudio | None
    elapsed_s: float


# --- recordings --------------------------------------------------------------------------


class Gap(BaseModel):
    start_us: int
    end_us: int
    start: str
    end: str
    duration_s: float

    @staticmethod
    def times(start_us: int, end_us: int) -> dict[str, Any]:
        return {
            "start_us": start_us,
            "end_us": end_us,
            "start": iso(start_us),
            "end": iso(end_us),
            "duration_s": round((end_us - start_us) / 1e6, 3),
        }


class Run(Gap):
    """Recorded video without a break: segments that follow one another."""

    segments: int
    bytes: int
    open: bool = Field(description="the newest segment is still being written")


class Recordings(BaseModel):
    """Runs and gaps of a camera's main stream in ``[start, end)``. A window with more runs
    than ``limit`` is cut at the first run left out: ``end`` is where this page stops and
    ``next`` continues from there."""

    camera: str
    start_us: int
    end_us: int
    start: str
    end: str
    runs: list[Run]
    gaps: list[Gap]
    quarantined_segments: int
    next: str | None


# --- system ------------------------------------------------------------------------------


class Health(BaseModel):
    status: str = Field(description="ok, or degraded when a storage root is not ok")
    recording: bool
    roots: dict[str, str]


class StorageRoot(BaseModel):
    name: str
    path: str
    usable: bool
    state: str = Field(description="ok, degraded or refused")
    error: str | None
    warning: str | None
    bytes_deleted_early: int
    bytes_used: int | None
    bytes_free: int | None
    max_bytes: int | None
    min_free_bytes: int | None


class Storage(BaseModel):
    """The storage roots (as many as the configuration names: not paged)."""

    roots: list[StorageRoot]


class SystemInfo(BaseModel):
    """The server as a whole, in numbers: what ``/metrics`` exposes that no other JSON route
    answers (per-camera figures are in the camera list, the roots in ``/api/v1/storage``)."""

    version: str
    now_us: int = Field(description="the server's clock: for rates from two readings")
    now: str
    recording: bool
    cameras: int
    cameras_by_state: dict[State, int] = Field(description="how many cameras are in each state")
    retention_deleted_bytes: int = Field(description="bytes retention deleted since start")
    reader_longest_round_s: float = Field(
        description="longest round of the RTSP reader thread since start"
    )
    audit_head_seq: int = Field(description="newest audit entry appended or seen")
    audit_checkpoint_seq: int = Field(description="newest signed audit checkpoint (0: none)")

