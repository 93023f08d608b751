"""The one configuration: a YAML (safe loader) or TOML file validated by pydantic models.

Every model forbids unknown keys, so a typo is an error that names the file and the field
instead of a setting silently ignored. Secrets (camera passwords) are ``SecretStr`` and are
kept apart from stream URLs; :func:`redact` removes any credentials that slip into a URL before
it is logged or shown.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import tomllib
import urllib.parse
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from vms.detection_config import DetectConfig, DetectionConfig, EventsConfig
from vms.errors import Kind, VmsError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}


def parse_size(value: Any) -> Any:
    """``"500MiB"``, ``"2 GB"``, ``1048576`` → bytes. Other types pass on to pydantic."""
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if not m:
            raise ValueError(f"not a size: {value!r} (use bytes or e.g. '500MiB', '2GB')")
        number, unit = float(m.group(1)), (m.group(2) or "").upper()
        base = 1024 if "I" in unit else 1000
        power = "BKMGT".index(unit[0]) if unit else 0
        return int(number * base**power)
    return value


ByteSize = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Transport(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"


class RecordMode(enum.StrEnum):
    CONTINUOUS = "continuous"
    # Written like continuous, kept only where there was motion / an event (retention decides
    # ``recording.decide_after_s`` after a segment closes): the pre-roll exists when it happens.
    MOTION = "motion"
    EVENTS = "events"
    OFF = "off"


class StreamName(enum.StrEnum):
    MAIN = "main"
    SUB = "sub"


# The schemes a camera URL may have, as written (FFmpeg matches protocol names exactly).
# ``file`` is a clip played as a camera: the configuration file may name one; the API only when
# ``server.allow_file_cameras`` is set (see :func:`check_camera_url`).
URL_SCHEMES = ("rtsp", "rtsps", "file")
URL_MAX_CHARS = 2048
# RFC 3986 characters only: no whitespace, control characters, quotes, backticks, braces or
# non-ASCII (percent-encode those). Nothing here reaches a shell, but FFmpeg reads a URL as
# options and nested protocols (``concat:``, ``subfile,,start,...``), so only plain URLs pass.
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
# A DNS name or an IPv4 address; IPv6 literals are checked apart.
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def check_camera_url(url: str, *, allow_file: bool = True) -> str:
    """``url`` if it is a camera URL FFmpeg may open; raises ``ValueError`` saying what is wrong
    (never quoting the URL, which may be long or hostile). The one check of camera URLs: the
    configuration's :class:`StreamConfig` and the API's camera probe both use it."""
    if not url:
        raise ValueError("empty URL")
    if len(url) > URL_MAX_CHARS:
        raise ValueError(f"URL longer than {URL_MAX_CHARS} characters")
    if url.startswith("-"):
        raise ValueError("a URL cannot start with '-'")
    if any(c <= " " or c == "\x7f" for c in url):
        raise ValueError("URL holds whitespace or control characters")
    scheme = url.split(":", 1)[0] if ":" in url else ""
    if scheme not in URL_SCHEMES:
        shown = scheme if re.fullmatch(r"[a-z0-9+.-]{1,16}", scheme.lower()) else "(none)"
        raise ValueError(f"unsupported scheme {shown!r}: use rtsp, rtsps or file")
    if not _URL_CHARS.fullmatch(url):
        raise ValueError(
            "URL holds characters a URL cannot hold (quotes, backticks, braces, non-ASCII: "
            "percent-encode them)"
        )
    if scheme == "file" and not allow_file:
        raise ValueError("file:// cameras are not enabled (server.allow_file_cameras)")
    if not url.startswith(scheme + "://"):
        raise ValueError(f"not a {scheme}:// URL")
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:
        raise ValueError(
            "credentials in the URL: put them in the camera's username/password instead"
        )
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValueError("URL has an invalid port") from None
    host = parts.hostname or ""
    if scheme == "file":
        if host not in ("", "localhost"):
            raise ValueError("a file:// URL names no host: file:///absolute/path")
        if not parts.path.startswith("/"):
            raise ValueError("a file:// URL needs an absolute path")
        return url
    if not host:
        raise ValueError("URL has no host")
    if parts.netloc.split(":")[0].startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("URL has an invalid IPv6 host") from None
    elif not _HOST.fullmatch(host):
        raise ValueError("URL has an invalid host name")
    return url


class StreamConfig(_Model):
    url: str = Field(title="Stream URL", description="rtsp://, rtsps:// or file:// (looped clip)")
    transport: Transport = Field(Transport.TCP, title="RTSP transport")

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        return check_camera_url(url)


CAMERA_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class CameraConfig(_Model):
    id: str = Field(title="Camera id", pattern=CAMERA_ID_PATTERN)
    name: str = Field("", title="Display name")
    main: StreamConfig = Field(title="Main stream (recorded)")
    sub: StreamConfig | None = Field(None, title="Sub stream (live grid, detection)")
    username: str | None = Field(None, title="Camera user")
    password: SecretStr | None = Field(None, title="Camera password")
    password_env: str | None = Field(None, title="Environment variable holding the password")
    enabled: bool = Field(True, title="Enabled")
    record: RecordMode = Field(RecordMode.CONTINUOUS, title="Record mode")
    record_streams: list[StreamName] = Field(
        default_factory=lambda: [StreamName.MAIN],
        min_length=1,
        title="Streams recorded",
        description="main, sub or both; the sub stream is opened (for the live grid and "
        "detection) whenever it is configured, recorded only when listed here.",
    )
    retention_days: float | None = Field(None, gt=0, title="Keep recordings at most this many days")
    event_retention_days: float | None = Field(
        None, gt=0, title="Keep recordings around events this many days (longer than the rest)"
    )
    roots: list[str] | None = Field(None, title="Storage roots this camera may use (default: any)")
    detect: DetectConfig | None = Field(None, title="Detection (none: this camera is not watched)")

    @model_validator(mode="after")
    def _recordable(self) -> CameraConfig:
        if StreamName.SUB in self.record_streams and self.sub is None:
            raise ValueError("record_streams names sub, but the camera has no sub stream")
        if len(set(self.record_streams)) != len(self.record_streams):
            raise ValueError("record_streams names a stream twice")
        return self

    def stream(self, name: StreamName) -> StreamConfig | None:
        return self.main if name == StreamName.MAIN else self.sub

    @property
    def display_name(self) -> str:
        return self.name or self.id

    def secret(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_env:
            return os.environ.get(self.password_env)
        return None

    def source_url(self, stream: StreamConfig) -> str:
        """The URL handed to the demuxer, with percent-encoded credentials. Never log it."""
        if self.username is None or stream.url.startswith("file:"):
            return stream.url
        parts = urllib.parse.urlsplit(stream.url)
        user = urllib.parse.quote(self.username, safe="")
        secret = self.secret()
        cred = user if secret is None else f"{user}:{urllib.parse.quote(secret, safe='')}"
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{cred}@{parts.netloc}"))


class RootConfig(_Model):
    name: str = Field(title="Root name", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    path: Path = Field(title="Directory (mount point) of the disk")
    max_bytes: ByteSize | None = Field(None, title="Keep at most this many bytes of recordings")
    min_free_bytes: ByteSize = Field(
        1 << 30, title="Delete oldest recordings below this free space"
    )
    create: bool = Field(
        False,
        title="Create the directory on first use",
        description="Only for a root the catalog has never seen; a known root that is missing "
        "is always refused (an unmounted disk must not be recreated on the system disk).",
    )


class StorageConfig(_Model):
    roots: list[RootConfig] = Field(
        default_factory=lambda: [RootConfig(name="local", path=Path("recordings"), create=True)],
        min_length=1,
    )
    retention_interval_s: float = Field(1.0, gt=0, title="How often retention runs")

    @model_validator(mode="after")
    def _unique(self) -> StorageConfig:
        names = [r.name for r in self.roots]
        if len(names) != len(set(names)):
            raise ValueError("storage root names must be unique")
        return self


class RecordingConfig(_Model):
    segment_seconds: float = Field(60.0, ge=2, le=600, title="Target segment length")
    fragment_seconds: float = Field(1.0, gt=0, le=1.0, title="Maximum fragment length")
    stagger: bool = Field(True, title="Stagger segment rotation across cameras")
    decide_after_s: float = Field(
        120, ge=10, le=86_400,
        title="Record modes motion/events: keep or drop a closed segment after this long",
    )  # fmt: skip
    write_backlog_seconds: float = Field(
        10.0,
        ge=1,
        le=600,
        title="Video a camera may have waiting for its disk",
        description="Beyond this, the camera's fragments are dropped (and counted) until its "
        "storage root catches up: the reader never waits on a disk.",
    )


class Reader(enum.StrEnum):
    PYAV = "pyav"
    NATIVE = "native"


class IngestConfig(_Model):
    reader: Reader = Field(
        Reader.NATIVE,
        title="RTSP reader",
        description="native: one thread reads every RTSP-over-TCP camera (much cheaper in CPU); "
        "pyav: FFmpeg's RTSP client, one thread a camera. UDP, RTSPS and files always use pyav.",
    )
    open_timeout_s: float = Field(10.0, gt=0)
    stall_timeout_s: float = Field(10.0, gt=0, title="No packet for this long: reopen")
    backoff_initial_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    healthy_after_s: float = Field(30.0, gt=0, title="Reset backoff after this long streaming")


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


class ServerConfig(_Model):
    host: str = Field("127.0.0.1", title="Listen address (0.0.0.0 or :: for every interface)")
    port: int = Field(8080, ge=0, le=65535)
    log_format: LogFormat = Field(LogFormat.TEXT)
    log_level: str = Field("info", pattern=r"^(debug|info|warning|error)$")
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        title="Reverse proxies whose X-Forwarded-For is believed (networks, e.g. 10.0.0.0/8)",
    )
    allow_file_cameras: bool = Field(
        False,
        title="Let the API add file:// cameras",
        description="A file:// camera plays a file of this machine: off, the API refuses them "
        "(the configuration file may always name one). The demo turns it on.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        title="Origins other web pages may call the API from (CORS); none by default",
        description="Each as scheme://host[:port]. A state-changing request carrying any "
        "other Origin than these or the server's own is refused (403).",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for o in origins:
            parts = urllib.parse.urlsplit(o)
            bare = parts.path in ("", "/") and not parts.query and not parts.fragment
            if parts.scheme not in ("http", "https") or not parts.hostname or not bare:
                raise ValueError(f"not an origin (scheme://host[:port]): {o[:64]!r}")
        return [o.rstrip("/").lower() for o in origins]


class AuthConfig(_Model):
    local_key: bool = Field(
        True,
        title="Accept the local administration key (<data_dir>/local-api-key)",
        description="For vms status, the benchmarks and scripts on this machine.",
    )
    access_token_s: int = Field(600, ge=30, le=86_400, title="Access token lifetime")
    refresh_token_days: float = Field(14, gt=0, le=365, title="Refresh token lifetime")
    media_token_s: int = Field(60, ge=5, le=3600, title="Media token (URL) lifetime")
    setup_token_s: int = Field(3600, ge=60, le=86_400, title="First-admin setup token lifetime")
    password_min_length: int = Field(12, ge=8, le=128)
    login_failures: int = Field(5, ge=1, le=1000, title="Failed logins allowed per window")
    login_window_s: float = Field(60, gt=0, le=86_400, title="Window for failed logins")
    # RFC 9106's second recommended setting; changing these rehashes passwords at next login.
    argon2_time_cost: int = Field(3, ge=1, le=20)
    argon2_memory_kib: int = Field(65_536, ge=8 * 1024, le=4 * 1024 * 1024)
    argon2_parallelism: int = Field(4, ge=1, le=64)


class PlaybackConfig(_Model):
    max_range_days: float = Field(7, gt=0, le=366, title="Longest playback range")
    thumbnail_cache: int = Field(512, ge=0, le=100_000, title="Thumbnails kept in memory")


class ExportConfig(_Model):
    concurrent: int = Field(2, ge=1, le=16, title="Export jobs running at once")
    max_range_hours: float = Field(24, gt=0, le=24 * 31, title="Longest range one export may ask")
    keep_days: float = Field(7, gt=0, le=365, title="Delete finished exports after this long")


# A STUN or TURN URI's characters (RFC 3986's): it goes between <> in a Link header.
_ICE_URI = r"[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]{1,253}$"


class TurnServer(_Model):
    url: str = Field(title="TURN server", pattern=r"^turns?:" + _ICE_URI)
    # Printable ASCII: both go to browsers in a Link header (WHEP answers) as well as in JSON.
    username: str = Field("", max_length=256, pattern=r"^[\x20-\x7e]*$", title="TURN user")
    credential: SecretStr = Field(SecretStr(""), max_length=256, title="TURN password")

    @field_validator("credential")
    @classmethod
    def _printable(cls, v: SecretStr) -> SecretStr:
        if not re.fullmatch(r"[\x20-\x7e]*", v.get_secret_value()):
            raise ValueError("the TURN password must be printable ASCII")
        return v


class LiveConfig(_Model):
    webrtc_max_sessions: int = Field(100, ge=0, le=10_000, title="WebRTC viewers at once")
    stun_servers: list[Annotated[str, Field(pattern=r"^stuns?:" + _ICE_URI)]] = Field(
        default_factory=list, title="STUN servers for WebRTC (stun:host:port)"
    )
    turn_servers: list[TurnServer] = Field(default_factory=list, title="TURN servers for WebRTC")
    transcode_audio: bool = Field(
        False, title="Transcode live audio a viewer's transport cannot carry (AAC to Opus for "
        "WebRTC, G.711 to AAC for MSE), once per camera stream while watched"
    )


class CatalogConfig(_Model):
    url: str | None = Field(None, title="SQLAlchemy URL; default SQLite in data_dir")


class Config(_Model):
    data_dir: Path = Field(Path("data"), title="State directory (catalog, demo clips)")
    server: ServerConfig = Field(default_factory=ServerConfig)
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    playback: PlaybackConfig = Field(default_factory=PlaybackConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)
    detection: DetectionConfig = Field(default_factory=DetectionConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    cameras: list[CameraConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> Config:
        ids = [c.id for c in self.cameras]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate camera ids: {', '.join(sorted(dup))}")
        names = {r.name for r in self.storage.roots}
        for cam in self.cameras:
            unknown = set(cam.roots or ()) - names
            if unknown:
                raise ValueError(f"camera {cam.id}: unknown storage roots {sorted(unknown)}")
        return self

    def catalog_url(self) -> str:
        return self.catalog.url or f"sqlite:///{self.data_dir / 'catalog.db'}"

    def camera(self, camera_id: str) -> CameraConfig:
        for cam in self.cameras:
            if cam.id == camera_id:
                return cam
        raise VmsError(Kind.NOT_FOUND, f"no camera {camera_id!r}")


def _resolve(base: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """Relative paths in the file are relative to the file, not to the working directory."""
    data_dir = Path(raw.get("data_dir", "data"))
    raw["data_dir"] = str(data_dir if data_dir.is_absolute() else base / data_dir)
    storage = raw.get("storage")
    if isinstance(storage, dict) and isinstance(storage.get("roots"), list):
        for root in storage["roots"]:
            if isinstance(root, dict) and "path" in root:
                p = Path(str(root["path"]))
                root["path"] = str(p if p.is_absolute() else base / p)
    elif storage is None or (isinstance(storage, dict) and "roots" not in storage):
        storage = dict(storage or {})
        storage["roots"] = [
            {"name": "local", "path": str(Path(raw["data_dir"]) / "recordings"), "create": True}
        ]
        raw["storage"] = storage
    return raw


def load(path: Path) -> Config:
    """Load and validate a config file; raises VmsError(INVALID_ARGUMENT) naming file and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise VmsError(Kind.INVALID_ARGUMENT, f"{path}: cannot read config: {e.strerror}") from e
    try:
        if path.suffix.lower() == ".toml":
            raw: Any = tomllib.loads(text)
        else:
            raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        # Only the position and the problem: PyYAML's full message quotes the offending line,
        # which may be the one holding a password.
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "syntax error"
        raise VmsError(Kind.INVALID_ARGUMENT, f"{path}: not valid YAML{where}: {problem}") from None
    except tomllib.TOMLDecodeError as e:
        # tomllib's message gives the position, never the line's text.
        raise VmsError(Kind.INVALID_ARGUMENT, f"{path}: not valid TOML: {e}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise VmsError(Kind.INVALID_ARGUMENT, f"{path}: top level must be a mapping")
    return from_dict(_resolve(path.resolve().parent, raw), source=str(path))


def from_dict(raw: dict[str, Any], *, source: str = "<config>") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        lines = [f"{source}: invalid configuration:"]
        for err in e.errors(include_input=False, include_url=False):
            where = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in err["loc"])
            where = where.replace(".[", "[") or "(top level)"
            lines.append(f"  {where}: {err['msg']}")
        raise VmsError(Kind.INVALID_ARGUMENT, "\n".join(lines)) from None


_USERINFO_RE = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]*@", re.IGNORECASE)


def redact(text: str) -> str:
    """Remove ``user:password@`` from every URL in ``text`` (for logs and error messages)."""
    return _USERINFO_RE.sub(r"\g<scheme>***@", text)
