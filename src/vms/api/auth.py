"""The HTTP routes of users and credentials, under ``/api/v1/auth`` (:data:`router`).

Login, refresh, logout, who am I and password change for everyone; users, roles and grants for
admins; API keys (one's own; anyone's for admins); media tokens; the one-time setup of the first
admin. A new secret (access or refresh token, API key) appears in exactly one response, the one
that makes it. The refresh token also travels as an ``httpOnly``, ``SameSite=Strict`` cookie
scoped to this prefix, ``Secure`` when the request came over HTTPS (docs/design/security.md).

Mount with ``app.include_router(vms.api.auth.router)``; the app's ``VmsError`` handler must
send ``exc.headers`` (``WWW-Authenticate``, ``Retry-After``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Cookie, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from vms.api.errors import responses
from vms.api.guard import Admin, Authenticated, AuthService, check_camera, forbidden
from vms.auth import ALL, Action, Auth, Session, local
from vms.auth.ratelimit import client_address
from vms.auth.rbac import EVERY_CAMERA, Scope
from vms.auth.store import ApiKey, Grant, Role, User
from vms.errors import Kind, VmsError

PREFIX = "/api/v1/auth"
REFRESH_COOKIE = "vms_refresh"
LOCAL = local.PRINCIPAL.via  # the local administration key: no user behind it

UserName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
ROLE_PATTERN = r"^[a-z][a-z0-9_-]*$"
RoleName = Annotated[str, Field(min_length=1, max_length=64, pattern=ROLE_PATTERN)]
Password = Annotated[str, Field(min_length=1, max_length=1024)]
# A camera id as the config spells one, or '*' for every camera.
CameraRef = Annotated[str, Field(pattern=r"^(\*|[a-z0-9][a-z0-9_-]{0,62})$")]
Secret = Annotated[str, Field(min_length=1, max_length=4096)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserOut(BaseModel):
    id: int
    name: str
    role: str
    disabled: bool
    created_us: int
    password_changed_us: int

    @classmethod
    def of(cls, u: User) -> UserOut:
        return cls(id=u.id, name=u.name, role=u.role, disabled=u.disabled,
                   created_us=u.created_us, password_changed_us=u.password_changed_us)  # fmt: skip


class LoginIn(_In):
    name: UserName
    password: Password


class TokensOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds")
    refresh_token: str
    refresh_expires_in: int = Field(description="seconds")
    user: UserOut


class RefreshIn(_In):
    refresh_token: Secret | None = None


class MeOut(BaseModel):
    user: UserOut | None = Field(description="null for the local administration key: no user")
    via: str
    actions: list[Action]
    cameras: dict[Action, list[str]] = Field(description="per action, camera ids or ['*']")


class PasswordIn(_In):
    current_password: Password
    new_password: Password


class UserIn(_In):
    name: UserName
    password: Password
    role: RoleName


class UserPatch(_In):
    role: RoleName | None = None
    disabled: bool | None = None
    password: Password | None = None


class RoleOut(BaseModel):
    name: str
    builtin: bool
    actions: list[Action]

    @classmethod
    def of(cls, r: Role) -> RoleOut:
        return cls(name=r.name, builtin=r.builtin, actions=sorted(r.actions))


class RoleIn(_In):
    actions: list[Action] = Field(max_length=len(Action))


class GrantModel(_In):
    camera_id: CameraRef
    actions: list[Action] | None = Field(None, description="null: whatever the role allows")


class GrantsModel(_In):
    grants: list[GrantModel] = Field(max_length=10_000)


class ApiKeyIn(_In):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    actions: list[Action] = Field(min_length=1, max_length=len(Action))
    cameras: list[CameraRef] = Field([EVERY_CAMERA], min_length=1, max_length=10_000)
    user_id: int | None = Field(None, description="another user's (admins only)")


class ApiKeyOut(BaseModel):
    id: int
    name: str
    prefix: str
    user_id: int
    actions: list[Action]
    cameras: list[str]
    created_us: int
    last_used_us: int | None
    revoked: bool

    @classmethod
    def of(cls, k: ApiKey) -> ApiKeyOut:
        cams = [EVERY_CAMERA] if k.scope.cameras is ALL else sorted(k.scope.cameras)
        return cls(id=k.id, name=k.name, prefix=k.prefix, user_id=k.user_id,
                   actions=sorted(k.scope.actions), cameras=cams, created_us=k.created_us,
                   last_used_us=k.last_used_us, revoked=k.revoked)  # fmt: skip


class NewApiKeyOut(BaseModel):
    key: str = Field(description="shown this once: store it now")
    api_key: ApiKeyOut


class MediaTokenIn(_In):
    camera_id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    action: Action


class MediaTokenOut(BaseModel):
    token: str
    expires_in: int


class SetupStateOut(BaseModel):
    needed: bool = Field(description="no user exists yet: the first admin is made with the "
                         "one-time setup token the server logged")


class SetupIn(_In):
    token: Secret
    name: UserName
    password: Password


# Ids in paths are bounded here: an unbounded int reaches SQL as a value SQLite refuses.
UserId = Annotated[int, Path(ge=1, le=2**31 - 1, description="a user id")]
KeyId = Annotated[int, Path(ge=1, le=2**31 - 1, description="an API key id")]
RoleInPath = Annotated[str, Path(min_length=1, max_length=64, description="a role name")]

# Every route refuses a malformed request (400) and a missing or wrong credential (401), its
# own or the one the route checks (a password, a refresh or setup token); the rest per route.
router = APIRouter(prefix=PREFIX, tags=["auth"], responses=responses(400, 401))
# Any admin route: 403 for a caller who is no admin.
ADMIN = responses(403)


def _address(request: Request, auth: Auth) -> str:
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.get("x-forwarded-for"), auth.trusted_proxies)


def _https(request: Request, auth: Auth) -> bool:
    if request.url.scheme == "https":
        return True
    peer = request.client.host if request.client else None
    proto = request.headers.get("x-forwarded-proto", "").lower()
    # Through a trusted proxy the address differs from the peer only if the peer is trusted.
    trusted = peer is not None and client_address(peer, "192.0.2.1", auth.trusted_proxies) != peer
    return trusted and proto == "https"


def _tokens(request: Request, response: Response, auth: Auth, s: Session) -> TokensOut:
    response.set_cookie(
        REFRESH_COOKIE, s.refresh_token, max_age=s.refresh_expires_in, path=PREFIX,
        httponly=True, samesite="strict", secure=_https(request, auth),
    )  # fmt: skip
    response.headers["Cache-Control"] = "no-store"
    return TokensOut(
        access_token=s.access_token, expires_in=s.expires_in, refresh_token=s.refresh_token,
        refresh_expires_in=s.refresh_expires_in, user=UserOut.of(s.user),
    )  # fmt: skip


def _forget_cookie(response: Response) -> None:
    response.delete_cookie(REFRESH_COOKIE, path=PREFIX, httponly=True, samesite="strict")


RefreshCookie = Annotated[str | None, Cookie(alias=REFRESH_COOKIE, max_length=4096)]


# --- sessions ------------------------------------------------------------------------------


@router.post("/login", responses=responses(429))
def login(body: LoginIn, request: Request, response: Response, auth: AuthService) -> TokensOut:
    session = auth.login(body.name, body.password, _address(request, auth))
    return _tokens(request, response, auth, session)


@router.post("/refresh")
def refresh(
    request: Request,
    response: Response,
    auth: AuthService,
    cookie: RefreshCookie = None,
    body: Annotated[RefreshIn | None, Body()] = None,
) -> TokensOut:
    token = (body.refresh_token if body else None) or cookie
    if not token:
        raise VmsError(Kind.UNAUTHENTICATED, "no refresh token (cookie or body)")
    return _tokens(request, response, auth, auth.refresh(token))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(
    response: Response,
    auth: AuthService,
    cookie: RefreshCookie = None,
    body: Annotated[RefreshIn | None, Body()] = None,
) -> None:
    auth.logout((body.refresh_token if body else None) or cookie)
    _forget_cookie(response)


@router.get("/me")
def me(principal: Authenticated, auth: AuthService) -> MeOut:
    held = sorted(a for a in Action if principal.holds(a))
    cameras: dict[Action, list[str]] = {}
    for a in held:
        cams = principal.cameras_for(a)
        cameras[a] = [EVERY_CAMERA] if cams is ALL else sorted(cams)
    user = None if principal.via == LOCAL else UserOut.of(auth.store.user(principal.user_id))
    return MeOut(user=user, via=principal.via, actions=held, cameras=cameras)


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT, responses=responses(403))
def change_password(
    body: PasswordIn, response: Response, principal: Authenticated, auth: AuthService
) -> None:
    if principal.via != "bearer":
        raise VmsError(Kind.FORBIDDEN, "a password is changed by its user logged in, not a key")
    auth.change_password(principal, body.current_password, body.new_password)
    _forget_cookie(response)


@router.get("/setup")
def setup_state(auth: AuthService) -> SetupStateOut:
    """Whether the first admin is still to be made (the web client then offers the setup
    form). Open, like the setup itself: it tells no more than that no user exists yet."""
    return SetupStateOut(needed=auth.store.count_users() == 0)


@router.post("/setup", status_code=status.HTTP_201_CREATED, responses=responses(409))
def setup(body: SetupIn, auth: AuthService) -> UserOut:
    return UserOut.of(auth.setup(body.token, body.name, body.password))


@router.post("/media-token", responses=responses(403, 404))
def media_token(body: MediaTokenIn, principal: Authenticated, auth: AuthService) -> MediaTokenOut:
    if principal.via == LOCAL:  # a media token names a user, checked again at each use
        raise VmsError(Kind.FORBIDDEN, "media tokens are for users, not the local key")
    check_camera(principal, body.action, body.camera_id)
    token = auth.media_token(principal, body.camera_id, body.action)
    return MediaTokenOut(token=token, expires_in=auth.config.media_token_s)


# --- users, roles, grants (admin) ----------------------------------------------------------


@router.get("/users", responses=ADMIN)
def list_users(_: Admin, auth: AuthService) -> list[UserOut]:
    return [UserOut.of(u) for u in auth.store.users()]


@router.post("/users", status_code=status.HTTP_201_CREATED, responses=responses(403, 409))
def add_user(body: UserIn, who: Admin, auth: AuthService) -> UserOut:
    user = auth.add_user(body.name, body.password, body.role)
    auth.record(who.name, "user.create", user.name, {"role": user.role})
    return UserOut.of(user)


@router.get("/users/{user_id}", responses=responses(403, 404))
def get_user(user_id: UserId, _: Admin, auth: AuthService) -> UserOut:
    return UserOut.of(auth.store.user(user_id))


@router.patch("/users/{user_id}", responses=responses(403, 404, 409))
def change_user(user_id: UserId, body: UserPatch, who: Admin, auth: AuthService) -> UserOut:
    new_hash = None if body.password is None else auth.passwords.hash(body.password)
    user = auth.store.update_user(user_id, auth.clock.wall_us(), role=body.role,
                                  disabled=body.disabled, password_hash=new_hash)  # fmt: skip
    changed = sorted(body.model_fields_set - {"password"})
    auth.record(who.name, "user.update", user.name,
                {"changed": changed, "password_changed": body.password is not None})  # fmt: skip
    return UserOut.of(user)


@router.delete(
    "/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(403, 404, 409)
)
def delete_user(user_id: UserId, who: Admin, auth: AuthService) -> None:
    name = auth.store.user(user_id).name
    auth.store.delete_user(user_id)
    auth.record(who.name, "user.delete", name)


@router.get("/users/{user_id}/grants", responses=responses(403, 404))
def get_grants(user_id: UserId, _: Admin, auth: AuthService) -> GrantsModel:
    grants = auth.store.grants(user_id)
    return GrantsModel(grants=[_grant_out(g) for g in grants])


@router.put("/users/{user_id}/grants", responses=responses(403, 404))
def set_grants(user_id: UserId, body: GrantsModel, who: Admin, auth: AuthService) -> GrantsModel:
    new = [Grant(g.camera_id, None if g.actions is None else frozenset(g.actions))
           for g in body.grants]  # fmt: skip
    auth.store.set_grants(user_id, new)
    auth.record(who.name, "user.grants", auth.store.user(user_id).name,
                {"grants": [g.model_dump(mode="json") for g in body.grants]})  # fmt: skip
    return GrantsModel(grants=[_grant_out(g) for g in auth.store.grants(user_id)])


def _grant_out(g: Grant) -> GrantModel:
    return GrantModel(camera_id=g.camera_id,
                      actions=None if g.actions is None else sorted(g.actions))  # fmt: skip


@router.get("/roles", responses=ADMIN)
def list_roles(_: Admin, auth: AuthService) -> list[RoleOut]:
    return [RoleOut.of(r) for r in auth.store.roles()]


@router.put(
    "/roles/{name}",
    responses={201: {"model": RoleOut, "description": "Created"}, **responses(403, 409)},
)
def put_role(
    name: Annotated[str, Path(min_length=1, max_length=64, pattern=ROLE_PATTERN)],
    body: RoleIn,
    response: Response,
    who: Admin,
    auth: AuthService,
) -> RoleOut:
    role, created = auth.store.put_role(name, frozenset(body.actions))
    auth.record(who.name, "role.create" if created else "role.update", name,
                {"actions": sorted(role.actions)})  # fmt: skip
    if created:
        response.status_code = status.HTTP_201_CREATED
    return RoleOut.of(role)


@router.delete(
    "/roles/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(403, 404, 409)
)
def delete_role(name: RoleInPath, who: Admin, auth: AuthService) -> None:
    auth.store.delete_role(name)
    auth.record(who.name, "role.delete", name)


# --- API keys ------------------------------------------------------------------------------


@router.post("/api-keys", status_code=status.HTTP_201_CREATED, responses=responses(403, 404))
def create_api_key(
    body: ApiKeyIn, response: Response, principal: Authenticated, auth: AuthService
) -> NewApiKeyOut:
    if principal.via != "bearer":
        raise VmsError(Kind.FORBIDDEN, "API keys are created by a user logged in, not a key")
    owner = principal.user_id if body.user_id is None else body.user_id
    if owner != principal.user_id and not principal.holds(Action.ADMIN):
        raise forbidden(Action.ADMIN)
    cams = ALL if EVERY_CAMERA in body.cameras else frozenset(body.cameras)
    key, row = auth.new_api_key(owner, body.name, Scope(frozenset(body.actions), cams))
    scope = {"owner": owner, "actions": sorted(body.actions), "cameras": body.cameras}
    auth.record(principal.name, "api_key.create", row.prefix, scope)
    response.headers["Cache-Control"] = "no-store"
    return NewApiKeyOut(key=key, api_key=ApiKeyOut.of(row))


@router.get("/api-keys")
def list_api_keys(principal: Authenticated, auth: AuthService) -> list[ApiKeyOut]:
    mine = None if principal.holds(Action.ADMIN) else principal.user_id
    return [ApiKeyOut.of(k) for k in auth.store.api_keys(mine)]


@router.delete(
    "/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(404)
)
def revoke_api_key(key_id: KeyId, principal: Authenticated, auth: AuthService) -> None:
    key = auth.store.api_key(key_id)
    if key.user_id != principal.user_id and not principal.holds(Action.ADMIN):
        raise VmsError(Kind.NOT_FOUND, f"no API key {key_id}")  # others' keys are not shown
    auth.store.revoke_api_key(key_id)
    auth.record(principal.name, "api_key.revoke", key.prefix, {"owner": key.user_id})
