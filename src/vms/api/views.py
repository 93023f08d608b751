"""Saved views of the web client's Live wall, per user: ``/api/v1/views[/{name}]``.

- ``GET /api/v1/views``: the caller's views, by name (one page: a user has at most
  :data:`~vms.auth.views.MAX_VIEWS`).
- ``GET /api/v1/views/{name}``: one of them.
- ``PUT /api/v1/views/{name}`` ``{layout, cameras}``: make (201) or replace (200) it.
- ``DELETE /api/v1/views/{name}``: 204.

A view is ``{name, layout: "1"|"4"|"9"|"16", cameras: [id or null per tile]}``, padded with
nulls to its layout's tiles. Each user sees and changes only their own views: another user's
view of the same name is another row, and there is no route to anyone else's. The local
administration key has no user and so no views (403).

Access to cameras is judged when a view is read, not only when it is saved: a camera the
caller may no longer view, or that no longer exists, comes back as an empty tile (null in its
place), so neither a withdrawn grant nor a removed camera shows through a saved view. Saving a
view that names a camera the caller may not view is 404, as if the camera did not exist (as
every camera route answers).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from vms.api import models
from vms.api.deps import ServerDep
from vms.api.errors import ERRORS, responses
from vms.api.guard import Authenticated
from vms.auth import Action, Principal, local
from vms.auth.views import LAYOUTS, NAME_MAX, View, ViewStore, visible
from vms.config import CAMERA_ID_PATTERN
from vms.errors import Detail, Kind, VmsError, capped
from vms.server import Server
from vms.times import iso

PREFIX = "/api/v1/views"
TILES_MAX = max(LAYOUTS.values())

router = APIRouter(prefix=PREFIX, tags=["views"], responses=ERRORS)

# Printable text; the store trims it and refuses what is left empty.
ViewName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=NAME_MAX,
        pattern=r"^[^\x00-\x1f\x7f-\x9f/]+$",
        description=f"the view's name: the user's own text, at most {NAME_MAX} characters",
    ),
]
CameraSlot = Annotated[str, Field(pattern=CAMERA_ID_PATTERN)] | None


class ViewIn(BaseModel):
    """A view to save under the name in the path."""

    model_config = ConfigDict(extra="forbid")

    layout: str = Field(
        pattern=r"^(1|4|9|16)$", description="tiles of the wall's grid: 1, 4, 9 or 16"
    )
    cameras: list[CameraSlot] = Field(
        default_factory=list,
        max_length=TILES_MAX,
        description="per tile, in reading order, a camera id or null (an empty tile); "
        "at most as many as the layout has tiles, padded with nulls",
    )


class ViewOut(BaseModel):
    name: str
    layout: str
    cameras: list[str | None] = Field(
        description="per tile a camera id, or null: empty, or a camera you may not view"
    )
    updated_us: int
    updated: str

    @classmethod
    def of(cls, v: View) -> ViewOut:
        return cls(name=v.name, layout=v.layout, cameras=list(v.cameras),
                   updated_us=v.updated_us, updated=iso(v.updated_us))  # fmt: skip


def _user(who: Principal) -> int:
    if who.via == local.PRINCIPAL.via:
        raise VmsError(Kind.FORBIDDEN, "views are saved per user; the local key has no user")
    return who.user_id


def _seen(server: Server, who: Principal, view: View) -> View:
    known = {c.config.id for c in server.cameras}
    return visible(view, lambda c: c in known and who.permitted(Action.VIEW, c))


def _store(server: Server) -> ViewStore:
    return ViewStore(server.catalog)


@router.get("", response_model=models.Page[ViewOut])
async def list_views(server: ServerDep, who: Authenticated) -> models.Page[ViewOut]:
    """Your views, by name."""
    found = await run_in_threadpool(_store(server).list, _user(who))
    return models.Page[ViewOut](items=[ViewOut.of(_seen(server, who, v)) for v in found], next=None)


@router.get("/{name}", response_model=ViewOut)
async def get_view(name: ViewName, server: ServerDep, who: Authenticated) -> ViewOut:
    view = await run_in_threadpool(_store(server).get, _user(who), name)
    return ViewOut.of(_seen(server, who, view))


@router.put(
    "/{name}",
    response_model=ViewOut,
    responses={201: {"model": ViewOut, "description": "Created"}, **responses(409)},
)
async def put_view(
    name: ViewName, body: ViewIn, response: Response, server: ServerDep, who: Authenticated
) -> ViewOut:
    """Save the view (made: 201; replaced: 200). 409 past the most views a user may keep."""
    user_id = _user(who)
    known = {c.config.id for c in server.cameras}
    refused = sorted({c for c in body.cameras if c is not None and
                      (c not in known or not who.permitted(Action.VIEW, c))})  # fmt: skip
    if refused:
        raise VmsError(
            Kind.NOT_FOUND,
            "; ".join(f"no camera {capped(c)}" for c in refused),
            [Detail("cameras", f"unknown camera {capped(c)}") for c in refused],
        )
    now = server.clock.wall_us()
    view, made = await run_in_threadpool(
        _store(server).put, user_id, name, body.layout, body.cameras, now
    )
    if made:
        response.status_code = status.HTTP_201_CREATED
    return ViewOut.of(view)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_view(name: ViewName, server: ServerDep, who: Authenticated) -> Response:
    await run_in_threadpool(_store(server).delete, _user(who), name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
