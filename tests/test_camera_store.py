"""Cameras kept in the catalog, on SQLite and on PostgreSQL: the seed policy, changes made at
run time, the migration from a catalog without them, and passwords encrypted at rest."""

from __future__ import annotations

import hashlib
import json
import logging
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig

import vms.catalog.store
from tests.conftest import START_US
from vms.cameras.secrets import KEY_FILE, Secrets
from vms.cameras.store import API, FILE, CameraStore, SeedReport
from vms.catalog.store import Catalog, cameras
from vms.clock import SimulatedClock
from vms.config import CameraConfig
from vms.errors import Kind, VmsError

PASSWORD = "s3cr3t-Pa55word!"
OTHER_PASSWORD = "an0ther-Pa55word?"


def cam(camera_id: str = "door", **changes: Any) -> CameraConfig:
    data: dict[str, Any] = {
        "id": camera_id,
        "name": f"Camera {camera_id}",
        "main": {"url": f"rtsp://192.0.2.10:554/{camera_id}/main"},
        "username": "admin",
        "password": PASSWORD,
    }
    data.update(changes)
    return CameraConfig.model_validate(data)


class Rig:
    def __init__(self, url: str, data_dir: Path) -> None:
        self.url, self.data_dir = url, data_dir
        self.clock = SimulatedClock(START_US)
        self.catalog = Catalog(url)
        self.store = CameraStore(self.catalog, Secrets(data_dir), clock=self.clock)

    def restart(self) -> None:
        """A new process on the same catalog and data directory."""
        self.catalog.close()
        self.catalog = Catalog(self.url)
        self.store = CameraStore(self.catalog, Secrets(self.data_dir), clock=self.clock)

    def seed(self, *entries: CameraConfig) -> SeedReport:
        self.clock.advance(1)
        return self.store.seed(list(entries), self.clock.wall_us())

    def row(self, camera_id: str) -> Any:
        with self.catalog.engine.connect() as c:
            return c.execute(sa.select(cameras).where(cameras.c.id == camera_id)).one()

    def segment(self, camera_id: str) -> int:
        root = self.catalog.root_by_name("r1")
        root_id = root[0] if root else self.catalog.add_root("r1", "uuid-1", 1)
        return self.catalog.open_segment(
            camera_id=camera_id, stream=0, root_id=root_id, path=f"{camera_id}/d/1-main.mp4",
            start_us=1, media_start=0, codec="h264", width=1, height=1, has_audio=False,
            timescale=90000,
        )  # fmt: skip


def _url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=["sqlite", "postgresql"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(_url(request, tmp_path), tmp_path / "data")
    yield r
    r.catalog.close()


@pytest.fixture
def sqlite_rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(f"sqlite:///{tmp_path / 'catalog.db'}", tmp_path / "data")
    yield r
    r.catalog.close()


def _alembic(conn: sa.Connection) -> AlembicConfig:
    cfg = AlembicConfig()
    location = Path(vms.catalog.store.__file__).parent / "migrations"
    cfg.set_main_option("script_location", str(location))
    cfg.attributes["connection"] = conn
    return cfg


# --- migration -----------------------------------------------------------------------------


@pytest.mark.parametrize("url_kind", ["sqlite", "postgresql"])
def test_a_0002_catalog_with_cameras_migrates_and_seeds(
    request: pytest.FixtureRequest, tmp_path: Path, url_kind: str
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'old.db'}"
        if url_kind == "sqlite"
        else str(request.getfixturevalue("postgres_url"))
    )
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        command.upgrade(_alembic(conn), "0002")
        conn.execute(sa.text("INSERT INTO roots VALUES (1, 'r1', 'u', 0)"))
        conn.execute(sa.text("INSERT INTO cameras VALUES ('door', 'Door'), ('gone', 'Gone')"))
        conn.execute(
            sa.text(
                "INSERT INTO segments (camera_id, root_id, path, state, start_us, end_us, codec,"
                " width, height, has_audio, timescale, init_bytes, bytes, fragments)"
                " VALUES ('gone', 1, 'gone/d/1-main.mp4', 1, 0, 1, 'h264', 1, 1, false, 90000,"
                " 0, 0, 0)"
            )
        )
    engine.dispose()

    r = Rig(url, tmp_path / "data")
    try:
        with r.catalog.engine.connect() as c:
            assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0007"
        row = r.row("door")
        assert (row.name, row.origin, row.seed, row.config, row.secret) == (
            "Door", FILE, None, None, None,
        )  # fmt: skip
        assert row.enabled is True and row.removed_us is None and row.updated_us == 0
        assert r.store.list() == [], "a row that only names a camera is no camera of the store"
        with pytest.raises(VmsError) as e:
            r.store.get("door")
        assert e.value.kind == Kind.NOT_FOUND

        report = r.seed(cam("door"))
        assert report.added == ("door",) and report.removed == ("gone",)
        assert r.store.list() == [cam("door")]
        assert r.row("gone").removed_us is not None
        assert r.catalog.camera_ids() == {"door", "gone"}, "a removed camera's files stay known"
        assert [s.camera_id for s in r.catalog.segments()] == ["gone"]
    finally:
        r.catalog.close()

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        command.downgrade(_alembic(conn), "0002")
        columns = {c["name"] for c in sa.inspect(conn).get_columns("cameras")}
        assert columns == {"id", "name"}
        names = dict(conn.execute(sa.text("SELECT id, name FROM cameras")).fetchall())
    assert names == {"door": "Camera door", "gone": "Gone"}
    engine.dispose()


# --- the seed policy ------------------------------------------------------------------------


def test_a_file_camera_new_to_the_catalog_is_inserted(rig: Rig) -> None:
    report = rig.seed(cam("door"), cam("yard", password=None, password_env="YARD_PW"))
    assert report == SeedReport(added=("door", "yard"))
    assert rig.store.list() == [cam("door"), cam("yard", password=None, password_env="YARD_PW")]
    door = rig.store.get("door")
    assert door.password is not None and door.password.get_secret_value() == PASSWORD
    assert rig.row("door").origin == FILE and rig.row("door").name == "Camera door"
    yard = rig.row("yard")
    assert yard.secret is None, "a password_env camera keeps the variable's name, nothing secret"
    assert rig.store.get("yard").password_env == "YARD_PW"


def test_an_unchanged_entry_keeps_the_changes_made_at_run_time(rig: Rig) -> None:
    rig.seed(cam("door"), cam("yard"))
    rig.store.update(cam("door", name="Front door", password=OTHER_PASSWORD))
    rig.store.set_enabled("yard", False)
    rig.restart()
    # Keys written out at their defaults and another key order are the same entry.
    same = CameraConfig.model_validate(
        {"enabled": True, "record": "continuous", **cam("door").model_dump(exclude={"password"}),
         "password": PASSWORD}
    )  # fmt: skip
    report = rig.seed(same, cam("yard"))
    assert report == SeedReport(kept=("door", "yard"))
    door = rig.store.get("door")
    assert door.name == "Front door"
    assert door.password is not None and door.password.get_secret_value() == OTHER_PASSWORD
    assert rig.store.get("yard").enabled is False


def test_an_edited_entry_overwrites_the_changes_made_at_run_time(rig: Rig) -> None:
    rig.seed(cam("door"), cam("yard"))
    rig.store.update(cam("door", name="Front door"))
    rig.store.set_enabled("yard", False)
    rig.restart()
    report = rig.seed(cam("door", retention_days=7), cam("yard", password=OTHER_PASSWORD))
    assert report == SeedReport(updated=("door", "yard")), "a new password alone is an edit"
    assert rig.store.get("door") == cam("door", retention_days=7)
    yard = rig.store.get("yard")
    assert yard.enabled is True
    assert yard.password is not None and yard.password.get_secret_value() == OTHER_PASSWORD
    assert rig.seed(cam("door", retention_days=7), cam("yard", password=OTHER_PASSWORD)) == (
        SeedReport(kept=("door", "yard"))
    ), "seeded once, the edit is no longer new"


def test_a_file_camera_gone_from_the_file_is_removed_and_restored_when_back(rig: Rig) -> None:
    rig.seed(cam("door"), cam("yard"))
    seg = rig.segment("yard")
    report = rig.seed(cam("door"))
    assert report == SeedReport(kept=("door",), removed=("yard",))
    assert [c.id for c in rig.store.list()] == ["door"]
    with pytest.raises(VmsError) as e:
        rig.store.get("yard")
    assert e.value.kind == Kind.NOT_FOUND
    row = rig.row("yard")
    assert row.removed_us == rig.clock.wall_us() and row.secret is None
    assert rig.catalog.segment(seg).camera_id == "yard", "its recordings stay"
    assert "yard" in rig.catalog.camera_ids(), "recovery and check still know its files"

    report = rig.seed(cam("door"), cam("yard"))  # the same entry as before
    assert report == SeedReport(kept=("door",), restored=("yard",))
    assert rig.store.get("yard") == cam("yard")
    assert rig.row("yard").removed_us is None
    assert rig.seed(cam("door")).removed == ("yard",)
    assert rig.seed(cam("door")) == SeedReport(kept=("door",)), "removed once, not again"


def test_a_removal_made_at_run_time_survives_restarts_until_the_entry_is_edited(rig: Rig) -> None:
    rig.seed(cam("door"))
    rig.store.remove("door")
    rig.restart()
    assert rig.seed(cam("door")) == SeedReport(kept=("door",))
    assert rig.store.list() == []
    report = rig.seed(cam("door", name="Door again"))
    assert report == SeedReport(restored=("door",))
    assert rig.store.get("door").name == "Door again"


def test_a_camera_removed_at_run_time_and_from_the_file_comes_back_with_its_entry(
    rig: Rig,
) -> None:
    rig.seed(cam("door"))
    rig.store.remove("door")
    assert rig.seed() == SeedReport()
    assert rig.seed(cam("door")) == SeedReport(restored=("door",))
    assert rig.store.get("door") == cam("door")


def test_the_seed_never_touches_cameras_added_through_the_api(rig: Rig) -> None:
    rig.seed(cam("door"))
    rig.store.add(cam("lobby", password=OTHER_PASSWORD))
    before = rig.row("lobby")
    assert before.origin == API and before.seed is None
    assert rig.seed(cam("door")) == SeedReport(kept=("door",))
    assert rig.seed() == SeedReport(removed=("door",)), "only file cameras leave with the file"
    report = rig.seed(cam("lobby", name="From the file"))
    assert report == SeedReport(ignored=("lobby",))
    assert rig.row("lobby") == before
    assert rig.store.get("lobby") == cam("lobby", password=OTHER_PASSWORD)


def test_an_id_freed_by_a_removal_may_be_taken_by_a_new_camera(rig: Rig) -> None:
    rig.store.add(cam("lobby"))
    seg = rig.segment("lobby")
    rig.store.remove("lobby")
    rig.store.add(cam("lobby", name="New lobby"))  # through the API
    assert rig.store.get("lobby").name == "New lobby"
    rig.store.remove("lobby")
    assert rig.seed(cam("lobby")) == SeedReport(restored=("lobby",))  # or through the file
    assert rig.row("lobby").origin == FILE and rig.store.get("lobby") == cam("lobby")
    assert rig.catalog.segment(seg).camera_id == "lobby"


def test_a_row_made_by_ensure_camera_is_seeded_from_the_file(rig: Rig) -> None:
    rig.catalog.ensure_camera("door", "door")
    rig.catalog.ensure_camera("stray", "stray")
    assert rig.store.list() == []
    assert rig.seed(cam("door")) == SeedReport(added=("door",), removed=("stray",))
    rig.catalog.ensure_camera("door", "another name")
    assert rig.row("door").name == "Camera door", "the store's row keeps its own name"
    assert rig.store.get("door") == cam("door")


# --- changes at run time --------------------------------------------------------------------


def test_add_update_enable_remove(rig: Rig) -> None:
    rig.seed(cam("door"))
    rig.store.add(cam("lobby", password=None, username=None))
    for taken in ("door", "lobby"):
        with pytest.raises(VmsError) as e:
            rig.store.add(cam(taken))
        assert e.value.kind == Kind.CONFLICT and e.value.kind.http_status == 409
    rig.clock.advance(5)
    rig.store.update(cam("lobby", name="Lobby", sub={"url": "rtsp://192.0.2.11/sub"}))
    assert rig.row("lobby").updated_us == rig.clock.wall_us()
    assert rig.store.get("lobby") == cam(
        "lobby", name="Lobby", sub={"url": "rtsp://192.0.2.11/sub"}
    )
    assert rig.row("lobby").origin == API
    rig.store.update(cam("door", password=None))
    assert rig.store.get("door").password is None and rig.row("door").secret is None
    assert rig.row("door").origin == FILE, "a file camera changed through the API stays one"

    rig.store.set_enabled("lobby", False)
    assert rig.store.get("lobby").enabled is False and rig.row("lobby").enabled is False
    rig.store.set_enabled("lobby", True)
    assert rig.store.get("lobby").enabled is True

    rig.store.remove("lobby")
    assert [c.id for c in rig.store.list()] == ["door"]
    for change in (
        lambda: rig.store.update(cam("lobby")),
        lambda: rig.store.set_enabled("lobby", False),
        lambda: rig.store.remove("lobby"),
        lambda: rig.store.get("nobody"),
        lambda: rig.store.remove("nobody"),
    ):
        with pytest.raises(VmsError) as e:
            change()
        assert e.value.kind == Kind.NOT_FOUND


def test_storage_roots_a_camera_names_must_exist(sqlite_rig: Rig) -> None:
    store = CameraStore(sqlite_rig.catalog, Secrets(sqlite_rig.data_dir), root_names=["disk1"])
    store.add(cam("door", roots=["disk1"]))
    with pytest.raises(VmsError) as e:
        store.update(cam("door", roots=["disk1", "disk9"]))
    assert e.value.kind == Kind.INVALID_ARGUMENT and "disk9" in e.value.message
    assert store.get("door").roots == ["disk1"]


# --- passwords at rest ----------------------------------------------------------------------


def test_the_catalog_file_does_not_hold_the_password(rig: Rig) -> None:
    rig.seed(cam("door"))
    rig.store.add(cam("lobby", password=OTHER_PASSWORD))
    rig.store.update(cam("lobby", name="Lobby", password=OTHER_PASSWORD))
    with rig.catalog.engine.connect() as c:
        rows = c.execute(sa.select(cameras)).fetchall()
    for row in rows:
        for value in row:
            raw = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
            for secret in (PASSWORD, OTHER_PASSWORD):
                assert secret.encode() not in raw
    assert '"username":"admin"' in rig.row("door").config, "the rest of the entry is there"
    if rig.url.startswith("sqlite"):
        rig.catalog.close()  # the WAL is checkpointed into the file; both are searched
        files = list(Path(rig.url.split(":///", 1)[1]).parent.glob("catalog.db*"))
        assert files
        for f in files:
            data = f.read_bytes()
            for secret in (PASSWORD, OTHER_PASSWORD):
                assert secret.encode() not in data, f"{f.name} holds a password"
                assert secret.encode("utf-16-le") not in data


def test_without_the_key_file_nothing_decrypts(rig: Rig, tmp_path: Path) -> None:
    rig.seed(cam("door"))
    elsewhere = CameraStore(rig.catalog, Secrets(tmp_path / "copy"))  # the catalog alone
    with pytest.raises(VmsError) as e:
        elsewhere.list()
    assert "does not exist" in e.value.message and KEY_FILE in e.value.message
    assert not (tmp_path / "copy" / KEY_FILE).exists(), "reading never makes a key"

    (tmp_path / "copy").mkdir()
    stranger = Secrets(tmp_path / "copy")
    stranger.encrypt("x", "make a key")  # a different key
    with pytest.raises(VmsError) as e:
        CameraStore(rig.catalog, stranger).get("door")
    assert e.value.kind == Kind.CORRUPT
    assert "does not decrypt" in e.value.message and "door" in e.value.message
    assert PASSWORD not in str(e.value)


def test_the_seed_digest_does_not_confirm_a_guessed_password(rig: Rig, tmp_path: Path) -> None:
    """Anyone with the catalog has the entry but the password: a plain hash of the entry would
    let them try guesses. The digest is keyed, so without the key file even the right guess
    does not give the stored value."""
    rig.seed(cam("door"))
    stored = rig.row("door").seed
    assert stored == rig.store.entry_digest(cam("door"))
    assert stored != rig.store.entry_digest(cam("door", password=OTHER_PASSWORD))
    guesser = CameraStore(rig.catalog, Secrets(tmp_path / "guesser"))
    assert guesser.entry_digest(cam("door")) != stored
    data = cam("door").model_dump(mode="json", exclude={"password"})
    for password in (PASSWORD, hashlib.sha256(PASSWORD.encode()).hexdigest()):
        text = json.dumps({**data, "password": password}, sort_keys=True, separators=(",", ":"))
        assert hashlib.sha256(text.encode()).hexdigest() != stored


def test_a_password_moved_to_another_camera_does_not_decrypt(rig: Rig) -> None:
    rig.seed(cam("door"), cam("yard", password=OTHER_PASSWORD))
    stolen = rig.row("door").secret
    with rig.catalog.engine.begin() as c:
        c.execute(cameras.update().where(cameras.c.id == "yard").values(secret=stolen))
    with pytest.raises(VmsError) as e:
        rig.store.get("yard")
    assert e.value.kind == Kind.CORRUPT and "another camera" in e.value.message
    assert rig.store.get("door").password == cam("door").password


def test_the_key_file_is_private_and_made_once(tmp_path: Path) -> None:
    secrets = Secrets(tmp_path / "data")
    sealed = secrets.encrypt("door", PASSWORD)
    key = tmp_path / "data" / KEY_FILE
    st = key.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 32
    assert sorted(p.name for p in key.parent.iterdir()) == [KEY_FILE], "no temporary file left"
    assert sealed != secrets.encrypt("door", PASSWORD), "a fresh nonce for every value"
    assert Secrets(tmp_path / "data").decrypt("door", sealed) == PASSWORD

    # Two processes making the key at once: the second links after the first, and uses its key.
    late = Secrets(tmp_path / "data")
    assert late._file._create() == key.read_bytes()
    assert Secrets(tmp_path / "data").decrypt("door", sealed) == PASSWORD

    key.chmod(0o640)
    with pytest.raises(VmsError) as e:
        Secrets(tmp_path / "data").decrypt("door", sealed)
    assert e.value.kind == Kind.INVALID_ARGUMENT
    assert "0640" in e.value.message and "chmod 600" in e.value.message
    key.chmod(0o604)
    with pytest.raises(VmsError):
        Secrets(tmp_path / "data").encrypt("door", PASSWORD)
    key.chmod(0o600)
    key.write_bytes(b"short")
    with pytest.raises(VmsError) as e:
        Secrets(tmp_path / "data").decrypt("door", sealed)
    assert "5 bytes" in e.value.message


def test_a_value_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    secrets = Secrets(tmp_path)
    sealed = secrets.encrypt("door", PASSWORD)
    for bad in (b"", b"\x02" + sealed[1:], sealed[:-1] + bytes([sealed[-1] ^ 1])):
        with pytest.raises(VmsError) as e:
            secrets.decrypt("door", bad)
        assert e.value.kind == Kind.CORRUPT


def test_passwords_appear_in_no_repr_str_log_or_error(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    report = rig.seed(cam("door"), cam("yard"))
    rig.store.add(cam("lobby", password=OTHER_PASSWORD))
    rig.store.update(cam("lobby", password=OTHER_PASSWORD, name="Lobby"))
    rig.store.set_enabled("lobby", False)
    rig.store.remove("yard")
    report2 = rig.seed(cam("door", password=OTHER_PASSWORD), cam("lobby"))
    errors = []
    for attempt in (lambda: rig.store.add(cam("door")), lambda: rig.store.get("yard")):
        with pytest.raises(VmsError) as e:
            attempt()
        errors.append(e.value)
    shown = [
        repr(rig.store), str(rig.store), repr(rig.store.secrets), repr(report), repr(report2),
        repr(rig.store.list()), str(rig.store.list()), repr(rig.store.get("door")),
        str(rig.store.get("lobby")), caplog.text,
        *(repr(e) for e in errors), *(str(e) for e in errors), *(str(e.to_dict()) for e in errors),
    ]  # fmt: skip
    assert "camera door updated" in caplog.text and "camera lobby added" in caplog.text
    for text in shown:
        for secret in (PASSWORD, OTHER_PASSWORD):
            assert secret not in text
    key = (rig.data_dir / KEY_FILE).read_bytes()
    for text in shown:
        assert key.hex() not in text and repr(key) not in text
