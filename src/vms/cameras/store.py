"""The cameras, kept in the catalog: a running server adds, changes, enables and removes them.

Each camera is a row of ``cameras``: its configuration as JSON (never the password), the
password encrypted by :class:`vms.cameras.secrets.Secrets`, where it came from (``origin``:
``file`` or ``api``), a keyed digest of the configuration-file entry it was last seeded from
(``seed``), ``enabled``, and ``removed_us`` once removed.

**The catalog is the source of truth at run time; the configuration file seeds it at each
start** (:meth:`CameraStore.seed`):

- a file camera the catalog does not have is inserted (origin ``file``);
- a file camera whose entry changed since it was last seeded is overwritten by the file: someone
  edited the file, and the edit wins over changes made through the API meanwhile. "Changed" is
  judged on the entry's canonical JSON, the password's hash included, so changing only the
  password counts; keys left at their defaults and key order do not;
- an unchanged entry leaves the catalog's version, so changes made at run time (a new name, a
  camera disabled or removed through the API) survive restarts;
- a camera of origin ``file`` that is no longer in the file is marked removed; one that comes
  back later is restored from its entry;
- a camera of origin ``api`` is never touched by the seed; a file entry with its id is ignored
  (and reported) while it exists.

**Removal keeps the row.** Segments name their camera by foreign key, so a removed camera's row
stays as a tombstone (``removed_us`` set, password wiped) and its recordings stay until retention
deletes them. An id whose camera was removed is free again: a camera added with it, through the
API or the file, takes the row over, and the old recordings under that id become its history.

A row that only names a camera (made by :meth:`vms.catalog.store.Catalog.ensure_camera`, or
carried over from a catalog older than this store) has no configuration: it is no camera of the
store until the seed overwrites it with its file entry, or marks it removed.

A camera with ``password_env`` keeps the variable's name; nothing secret is stored for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Collection, Iterable
from typing import Any

import sqlalchemy as sa
from pydantic import SecretStr, ValidationError

from vms.cameras.secrets import Secrets
from vms.catalog.store import Catalog, cameras
from vms.clock import Clock, SystemClock
from vms.config import CameraConfig
from vms.errors import Kind, VmsError, capped

log = logging.getLogger(__name__)

FILE, API = "file", "api"


@dataclasses.dataclass(frozen=True, slots=True)
class SeedReport:
    """What one seed did, as camera ids (sorted) under each outcome."""

    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()  # overwritten by an entry edited in the file
    restored: tuple[str, ...] = ()  # removed before, back in the file
    kept: tuple[str, ...] = ()  # entry unchanged: the catalog's version stands
    removed: tuple[str, ...] = ()  # gone from the file
    ignored: tuple[str, ...] = ()  # the id belongs to a camera added through the API

    def summary(self) -> str:
        """``added a, b; removed c``: every outcome but ``kept``, for the log; empty if none."""
        parts = [
            f"{name} {', '.join(ids)}"
            for name in ("added", "updated", "restored", "removed", "ignored")
            if (ids := getattr(self, name))
        ]
        return "; ".join(parts)


class CameraStore:
    """Cameras in the catalog. Every method is one transaction; all are thread-safe.

    ``root_names``, when given, are the storage roots a camera's ``roots`` may name.
    """

    def __init__(
        self,
        catalog: Catalog,
        secrets: Secrets,
        *,
        clock: Clock | None = None,
        root_names: Collection[str] | None = None,
    ) -> None:
        self.catalog = catalog
        self.secrets = secrets
        self.clock: Clock = clock or SystemClock()
        self.root_names = None if root_names is None else frozenset(root_names)

    def __repr__(self) -> str:
        return f"CameraStore({self.catalog.safe_url!r})"

    # --- start -------------------------------------------------------------------------

    def seed(self, config_cameras: Iterable[CameraConfig], now_us: int) -> SeedReport:
        """Apply the configuration file's cameras to the catalog (the policy above)."""
        entries = list(config_cameras)
        ids = [c.id for c in entries]
        if len(ids) != len(set(ids)):
            raise VmsError(Kind.INVALID_ARGUMENT, "the configuration names a camera id twice")
        out: dict[str, list[str]] = {f.name: [] for f in dataclasses.fields(SeedReport)}
        with self.catalog.write() as c:
            rows = {r.id: r for r in c.execute(sa.select(cameras))}
            for cfg in entries:
                digest = self.entry_digest(cfg)
                row = rows.get(cfg.id)
                if row is None:
                    values = self._values(cfg, now_us, FILE, digest)
                    c.execute(cameras.insert().values(id=cfg.id, **values))
                    out["added"].append(cfg.id)
                elif row.origin == API and _active(row):
                    out["ignored"].append(cfg.id)
                elif row.origin == FILE and row.seed == digest:
                    out["kept"].append(cfg.id)
                else:
                    values = self._values(cfg, now_us, FILE, digest)
                    c.execute(cameras.update().where(cameras.c.id == cfg.id).values(values))
                    outcome = "added" if row.config is None else "updated"
                    out["restored" if row.removed_us is not None else outcome].append(cfg.id)
            listed = set(ids)
            for row in rows.values():
                if row.origin != FILE or row.id in listed:
                    continue
                if row.removed_us is None:
                    c.execute(
                        cameras.update()
                        .where(cameras.c.id == row.id)
                        .values(removed_us=now_us, updated_us=now_us, seed=None, secret=None)
                    )
                    out["removed"].append(row.id)
                elif row.seed is not None:
                    # Removed at run time, now gone from the file too: should the entry come
                    # back, it is new to the catalog and restores the camera.
                    c.execute(cameras.update().where(cameras.c.id == row.id).values(seed=None))
        report = SeedReport(**{k: tuple(sorted(v)) for k, v in out.items()})
        for outcome in ("added", "updated", "restored", "removed"):
            for cam in getattr(report, outcome):
                log.info("camera %s %s from the configuration file", cam, outcome,
                         extra={"camera": cam})  # fmt: skip
        for cam in report.ignored:
            log.warning(
                "camera %s: the configuration file's entry is ignored: a camera with this id "
                "was added through the API (remove it there to let the file's entry in)", cam,
                extra={"camera": cam},
            )  # fmt: skip
        return report

    def entry_digest(self, cfg: CameraConfig) -> str:
        """The keyed digest of a file entry: its canonical JSON, the password as its hash."""
        data = cfg.model_dump(mode="json", exclude={"password"})
        secret = None if cfg.password is None else cfg.password.get_secret_value()
        data["password"] = None if secret is None else hashlib.sha256(secret.encode()).hexdigest()
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return self.secrets.digest(text.encode("utf-8"))

    # --- reads -------------------------------------------------------------------------

    def list(self) -> list[CameraConfig]:
        """The cameras (not removed), by id, passwords decrypted."""
        q = sa.select(cameras).where(cameras.c.removed_us.is_(None), cameras.c.config.is_not(None))
        with self.catalog.read() as c:
            rows = c.execute(q.order_by(cameras.c.id)).fetchall()
        return [self._config(r) for r in rows]

    def get(self, camera_id: str) -> CameraConfig:
        with self.catalog.read() as c:
            row = c.execute(sa.select(cameras).where(cameras.c.id == camera_id)).first()
        if row is None or not _active(row):
            raise _not_found(camera_id)
        return self._config(row)

    # --- changes -----------------------------------------------------------------------

    def add(self, cfg: CameraConfig) -> None:
        """A new camera (origin ``api``). An id in use is a ``CONFLICT``."""
        self._check(cfg)
        now = self.clock.wall_us()
        values = self._values(cfg, now, API, None)
        with self.catalog.write() as c:
            row = c.execute(sa.select(cameras).where(cameras.c.id == cfg.id)).first()
            if row is None:
                try:
                    c.execute(cameras.insert().values(id=cfg.id, **values))
                except sa.exc.IntegrityError:
                    raise _conflict(cfg.id) from None  # added meanwhile by another process
            elif _active(row):
                raise _conflict(cfg.id)
            else:
                done = c.execute(
                    cameras.update()
                    .where(cameras.c.id == cfg.id)
                    .where(sa.or_(cameras.c.removed_us.is_not(None), cameras.c.config.is_(None)))
                    .values(values)
                )
                if done.rowcount != 1:
                    raise _conflict(cfg.id)
        log.info("camera %s added", cfg.id, extra={"camera": cfg.id})

    def update(self, cfg: CameraConfig) -> None:
        """Replace a camera's whole configuration, password included (``None``: no password).
        It keeps its origin: a file camera stays one, and an edit of its file entry wins."""
        self._check(cfg)
        values = self._values(cfg, self.clock.wall_us(), None, None)
        self._change(cfg.id, values)
        log.info("camera %s updated", cfg.id, extra={"camera": cfg.id})

    def set_enabled(self, camera_id: str, enabled: bool) -> None:
        with self.catalog.write() as c:
            q = sa.select(cameras.c.config, cameras.c.enabled, cameras.c.removed_us)
            row = c.execute(q.where(cameras.c.id == camera_id)).first()
            if row is None or not _active(row):
                raise _not_found(camera_id)
            if bool(row.enabled) == enabled:
                return
            data = json.loads(row.config)
            data["enabled"] = enabled
            c.execute(
                cameras.update()
                .where(cameras.c.id == camera_id)
                .values(config=_dumps(data), enabled=enabled, updated_us=self.clock.wall_us())
            )
        state = "enabled" if enabled else "disabled"
        log.info("camera %s %s", camera_id, state, extra={"camera": camera_id})

    def remove(self, camera_id: str) -> None:
        """Mark the camera removed; its row and recordings stay (see the module's text)."""
        now = self.clock.wall_us()
        self._change(camera_id, {"removed_us": now, "updated_us": now, "secret": None})
        log.info("camera %s removed", camera_id, extra={"camera": camera_id})

    # --- rows --------------------------------------------------------------------------

    def _change(self, camera_id: str, values: dict[str, Any]) -> None:
        with self.catalog.write() as c:
            done = c.execute(
                cameras.update()
                .where(cameras.c.id == camera_id)
                .where(cameras.c.removed_us.is_(None), cameras.c.config.is_not(None))
                .values(values)
            )
            if done.rowcount != 1:
                raise _not_found(camera_id)

    def _values(
        self, cfg: CameraConfig, now_us: int, origin: str | None, seed: str | None
    ) -> dict[str, Any]:
        """The row's columns for ``cfg``; ``origin`` None keeps the row's origin and seed."""
        secret = None
        if cfg.password is not None:
            secret = self.secrets.encrypt(cfg.id, cfg.password.get_secret_value())
        values: dict[str, Any] = {
            "name": cfg.display_name,
            "config": _dumps(cfg.model_dump(mode="json", exclude={"password"})),
            "secret": secret,
            "enabled": cfg.enabled,
            "removed_us": None,
            "updated_us": now_us,
        }
        if origin is not None:
            values["origin"], values["seed"] = origin, seed
        return values

    def _config(self, row: Any) -> CameraConfig:
        try:
            data = json.loads(row.config)
            data["enabled"] = bool(row.enabled)  # the column is what set_enabled changes
            if row.secret is not None:
                data["password"] = SecretStr(self.secrets.decrypt(row.id, row.secret))
            return CameraConfig.model_validate(data)
        except (ValueError, TypeError) as e:
            problem = "not JSON"
            if isinstance(e, ValidationError):
                problem = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                    for err in e.errors(include_input=False, include_url=False)
                )
            raise VmsError(
                Kind.CORRUPT, f"camera {row.id}: its stored configuration is invalid: {problem}"
            ) from None

    def _check(self, cfg: CameraConfig) -> None:
        if self.root_names is None or cfg.roots is None:
            return
        unknown = sorted(set(cfg.roots) - self.root_names)
        if unknown:
            raise VmsError(
                Kind.INVALID_ARGUMENT, f"camera {cfg.id}: unknown storage roots {unknown}"
            )


def _active(row: Any) -> bool:
    return row.removed_us is None and row.config is not None


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _not_found(camera_id: str) -> VmsError:
    return VmsError(Kind.NOT_FOUND, f"no camera {capped(camera_id)}")


def _conflict(camera_id: str) -> VmsError:
    return VmsError(Kind.CONFLICT, f"camera id {capped(camera_id)} is already in use")
