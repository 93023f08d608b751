"""Who may do what: actions, roles, grants, and the principal a request runs as.

A role is a set of :class:`Action`; a grant gives a user one camera (or ``*``, every camera),
optionally narrowed to some of the role's actions. A role holding ``admin`` applies to every
camera whatever the grants say. An API key narrows its user further by its scopes; a media
token is one action on one camera. :class:`Principal` answers the two questions the API asks
(docs/design/security.md, "Actions, roles and grants").
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping

from vms.errors import Detail, Kind, VmsError, capped


class Action(enum.StrEnum):
    VIEW = "view"  # see that a camera exists, its name and its health
    LIVE = "live"
    PLAYBACK = "playback"
    EXPORT = "export"
    MANAGE = "manage"  # add, change, enable, disable and remove cameras
    ADMIN = "admin"  # users, roles, grants, others' API keys, audit, system


class _All(enum.Enum):
    ALL = "*"

    def __repr__(self) -> str:
        return "ALL"


ALL = _All.ALL
"""Every camera (what :meth:`Principal.cameras_for` answers for an admin or a ``*`` grant)."""
AllCameras = _All
EVERY_CAMERA = "*"  # the camera id of a grant or scope that covers every camera

ADMIN, OPERATOR, VIEWER = "admin", "operator", "viewer"
BUILTIN_ROLES: Mapping[str, frozenset[Action]] = {
    ADMIN: frozenset(Action),
    OPERATOR: frozenset({Action.VIEW, Action.LIVE, Action.PLAYBACK, Action.EXPORT}),
    VIEWER: frozenset({Action.VIEW, Action.LIVE}),
}


def actions(values: Iterable[str], field: str = "actions") -> frozenset[Action]:
    """``values`` as actions; an unknown name is INVALID_ARGUMENT naming ``field``."""
    out = set()
    for v in values:
        try:
            out.add(Action(v))
        except ValueError:
            problem = f"unknown action {capped(str(v))} (one of {', '.join(Action)})"
            detail = [Detail(field, problem)]
            raise VmsError(Kind.INVALID_ARGUMENT, f"{field}: {problem}", detail) from None
    return frozenset(out)


@dataclasses.dataclass(frozen=True, slots=True)
class Scope:
    """What a credential narrower than its user may do: an API key's scopes, a media token."""

    actions: frozenset[Action]
    cameras: frozenset[str] | _All

    def allows(self, action: Action, camera_id: str | None) -> bool:
        if action not in self.actions:
            return False
        return camera_id is None or self.cameras is ALL or camera_id in self.cameras


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who a request runs as, and what it may do.

    ``grants`` maps a camera id (or ``*``) to the actions granted there (the role's actions
    already intersected). ``via`` says how it authenticated: ``bearer``, ``api_key`` or
    ``media``; ``credential_id`` is the API key's id for ``api_key``.
    """

    user_id: int
    name: str
    role: str
    role_actions: frozenset[Action]
    grants: Mapping[str, frozenset[Action]]
    via: str = "bearer"
    scope: Scope | None = None
    credential_id: int | None = None

    @property
    def all_cameras(self) -> bool:
        return Action.ADMIN in self.role_actions

    def holds(self, action: Action) -> bool:
        """Whether the principal may do ``action`` on anything (routes about no camera)."""
        if action not in self.role_actions:
            return False
        if self.scope is not None and action not in self.scope.actions:
            return False
        if self.all_cameras or action in (Action.ADMIN, Action.MANAGE):
            return True
        return any(action in acts for acts in self.grants.values())

    def permitted(self, action: Action, camera_id: str) -> bool:
        if self.scope is not None and not self.scope.allows(action, camera_id):
            return False
        if action not in self.role_actions:
            return False
        if self.all_cameras:
            return True
        return any(action in self.grants.get(k, frozenset()) for k in (EVERY_CAMERA, camera_id))

    def cameras_for(self, action: Action) -> frozenset[str] | _All:
        """The cameras on which the principal may do ``action``: a set of ids, or ``ALL``."""
        if action not in self.role_actions:
            return frozenset()
        if self.scope is not None and action not in self.scope.actions:
            return frozenset()
        if self.all_cameras or action in self.grants.get(EVERY_CAMERA, frozenset()):
            mine: frozenset[str] | _All = ALL
        else:
            mine = frozenset(c for c, acts in self.grants.items() if action in acts)
        if self.scope is None or self.scope.cameras is ALL:
            return mine
        if mine is ALL:
            return self.scope.cameras
        return mine & self.scope.cameras

    def narrowed(self, scope: Scope, via: str, credential_id: int | None = None) -> Principal:
        """This principal as a credential with ``scope`` sees it."""
        if self.scope is not None:
            cams: frozenset[str] | _All
            if scope.cameras is ALL:
                cams = self.scope.cameras
            elif self.scope.cameras is ALL:
                cams = scope.cameras
            else:
                cams = scope.cameras & self.scope.cameras
            scope = Scope(scope.actions & self.scope.actions, cams)
        return dataclasses.replace(self, scope=scope, via=via, credential_id=credential_id)


def effective_grants(
    role_actions: frozenset[Action], grants: Iterable[tuple[str, frozenset[Action] | None]]
) -> dict[str, frozenset[Action]]:
    """Per camera id (or ``*``), the actions the role allows there: each grant's actions (all
    of the role's when None) intersected with the role's, several grants of a camera united."""
    out: dict[str, frozenset[Action]] = {}
    for camera_id, acts in grants:
        allowed = role_actions if acts is None else acts & role_actions
        out[camera_id] = out.get(camera_id, frozenset()) | allowed
    return out
