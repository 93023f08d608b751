"""Saved live-wall views, per user, in the catalog (migration 0007): what the web client's Live
and Playback pages save and load by name.

A view is a name, a layout (a grid of 1, 4, 9 or 16 tiles) and, per tile, a camera id or
nothing (an empty tile keeps its place: the wall is a grid, and tile 5 stays tile 5 whatever
is dropped before it). Rows belong to one user and go with it (``ON DELETE CASCADE``).

Traps:

- **A view outlives the cameras it names, and the user's rights to them.** A camera removed, or
  a grant withdrawn, after the view was saved must not show through it: the reader drops such
  cameras at read time (:func:`visible`, an empty tile in their place), never at write time only.
  The row keeps the id, so a camera that comes back (a grant given again) shows again.
- **Names are the user's own text**, shown back in a page: stored as given (trimmed), compared
  exactly, never interpreted; control characters are refused before they reach a row
  (PostgreSQL refuses a NUL in text outright), and ``/``, which no path segment can carry
  (a router decodes ``%2F`` before it matches).
- A user has at most :data:`MAX_VIEWS`: a loop in a client cannot grow the table without end.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from vms.catalog.store import Catalog, metadata
from vms.errors import Detail, Kind, VmsError, capped

NAME_MAX = 64
MAX_VIEWS = 100
LAYOUTS = {"1": 1, "4": 4, "9": 9, "16": 16}  # layout -> tiles

views = sa.Table(
    "views",
    metadata,
    sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("name", sa.String(NAME_MAX), primary_key=True),
    sa.Column("layout", sa.String(4), nullable=False),
    sa.Column("cameras", sa.Text, nullable=False),  # JSON list: a camera id or null per tile
    sa.Column("updated_us", sa.BigInteger, nullable=False),
)


@dataclasses.dataclass(frozen=True, slots=True)
class View:
    name: str
    layout: str
    cameras: tuple[str | None, ...]
    updated_us: int


def _view(row: Any) -> View:
    return View(row.name, row.layout, tuple(json.loads(row.cameras)), row.updated_us)


def no_view(name: str) -> VmsError:
    return VmsError(Kind.NOT_FOUND, f"no view {capped(name)}")


def check_name(name: str) -> str:
    """The name trimmed; INVALID_ARGUMENT when empty, too long or with control characters."""
    trimmed = name.strip()
    problem = None
    if not trimmed:
        problem = "empty"
    elif len(trimmed) > NAME_MAX:
        problem = f"longer than {NAME_MAX} characters"
    elif any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in trimmed):
        problem = "control characters are not allowed"
    elif "/" in trimmed:
        problem = "'/' is not allowed (the name is a path segment of the API)"
    if problem is not None:
        raise VmsError(Kind.INVALID_ARGUMENT, f"name: {problem}", [Detail("name", problem)])
    return trimmed


def check_tiles(layout: str, cameras: Sequence[str | None]) -> tuple[str | None, ...]:
    """The cameras padded with empty tiles to the layout's size; INVALID_ARGUMENT for an
    unknown layout or more cameras than tiles."""
    tiles = LAYOUTS.get(layout)
    if tiles is None:
        problem = f"not a layout: {capped(layout)} (one of {', '.join(LAYOUTS)})"
        raise VmsError(Kind.INVALID_ARGUMENT, f"layout: {problem}", [Detail("layout", problem)])
    if len(cameras) > tiles:
        problem = f"{len(cameras)} cameras for {tiles} tiles"
        raise VmsError(Kind.INVALID_ARGUMENT, f"cameras: {problem}", [Detail("cameras", problem)])
    return (*cameras, *([None] * (tiles - len(cameras))))


def visible(view: View, may_view: Callable[[str], bool]) -> View:
    """``view`` with every camera ``may_view`` refuses made an empty tile (see the module)."""
    kept = tuple(c if c is not None and may_view(c) else None for c in view.cameras)
    return dataclasses.replace(view, cameras=kept)


class ViewStore:
    """The views of the catalog's users. Thread-safe; each method one transaction."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def list(self, user_id: int) -> list[View]:
        """The user's views, by name."""
        q = sa.select(views).where(views.c.user_id == user_id).order_by(views.c.name)
        with self.catalog.read() as c:
            return [_view(r) for r in c.execute(q)]

    def get(self, user_id: int, name: str) -> View:
        name = name.strip()  # as put() saved it
        q = sa.select(views).where(views.c.user_id == user_id, views.c.name == name)
        with self.catalog.read() as c:
            row = c.execute(q).first()
        if row is None:
            raise no_view(name)
        return _view(row)

    def put(
        self, user_id: int, name: str, layout: str, cameras: Sequence[str | None], now_us: int
    ) -> tuple[View, bool]:
        """Make or replace the view; True when it was made. CONFLICT past :data:`MAX_VIEWS`."""
        name = check_name(name)
        tiles = check_tiles(layout, cameras)
        values = {"layout": layout, "cameras": json.dumps(list(tiles)), "updated_us": now_us}
        mine = views.c.user_id == user_id
        with self.catalog.write() as c:
            found = c.execute(sa.select(views.c.name).where(mine, views.c.name == name)).first()
            if found is not None:
                c.execute(views.update().where(mine, views.c.name == name).values(values))
            else:
                count = c.execute(sa.select(sa.func.count()).select_from(views).where(mine))
                if count.scalar_one() >= MAX_VIEWS:
                    raise VmsError(
                        Kind.CONFLICT, f"at most {MAX_VIEWS} views a user: delete one first"
                    )
                c.execute(views.insert().values(user_id=user_id, name=name, **values))
        return View(name, layout, tiles, now_us), found is None

    def delete(self, user_id: int, name: str) -> None:
        name = name.strip()
        q = views.delete().where(views.c.user_id == user_id, views.c.name == name)
        with self.catalog.write() as c:
            if c.execute(q).rowcount == 0:
                raise no_view(name)
