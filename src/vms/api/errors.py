"""The one error body of the API, and every way a request fails mapped into it.

Every answer that is not a success is ``{"error": <kind>, "message": <text>, "details":
[{"field", "problem"}, ...]}``: a :class:`~vms.errors.VmsError` raised by a handler (its
:class:`~vms.errors.Kind` gives the status), what the framework answers itself (unknown route,
wrong method, a parameter or body that fails its declared bounds) and a bug (500, nothing of the
traceback). A value someone sent is repeated in a message at most :data:`~vms.errors.CAP`
characters long, and a request with a thousand bad fields is told about the first few.

Validation messages come from the models' rules (``String should have at most 64
characters``) and never quote the value sent, so a password that fails its rules is not echoed.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from vms.errors import CAP, Detail, Kind, VmsError, capped, shorten

# A request with a thousand bad parameters is told about the first few.
MAX_DETAILS = 8
# pydantic prefixes the message of a validator's ValueError with this; the field says enough.
_VALUE_ERROR = "Value error, "


class ErrorDetail(BaseModel):
    field: str
    problem: str


class ErrorBody(BaseModel):
    """What every failed request answers."""

    error: str
    message: str
    details: list[ErrorDetail]


_DESCRIPTIONS = {
    400: "Invalid request",
    401: "No valid credentials",
    403: "Not permitted",
    404: "Not found",
    409: "Conflicts with the current state",
    429: "Too many failed attempts: wait for Retry-After",
    503: "Not available now (the camera is offline or disabled): try again later",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """For the routes' ``responses=``: the error answers a route documents, each in the one
    error body (tests/test_api_fuzz.py holds every answer to what its route declares)."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


# A route behind a guard: 401 without credentials, 403 without the permission.
ERRORS = responses(400, 401, 403, 404)
# A live route: also 503 while the camera cannot be watched.
LIVE_ERRORS = responses(400, 401, 403, 404, 503)


def body(error: str, message: str, details: list[Detail] | None = None) -> dict[str, Any]:
    """The error body for a kind given by name (a kind this package does not define, such as
    an access refusal, still answers the same shape)."""
    return {
        "error": error,
        "message": message,
        "details": [{"field": d.field, "problem": d.problem} for d in details or ()],
    }


def _problems(errors: list[Any], skip_loc: int) -> VmsError:
    details = []
    for e in errors[:MAX_DETAILS]:
        # loc is ("query" | "path" | "body", name, ...); the name may be whatever a client sent.
        loc = [str(p) for p in e["loc"][skip_loc:]]
        field = shorten(".".join(loc) or (str(e["loc"][0]) if e["loc"] else "request"))
        if e["type"] == "extra_forbidden":
            problem = "unknown parameter" if e["loc"][:1] == ("query",) else "unknown field"
        else:
            problem = str(e["msg"]).removeprefix(_VALUE_ERROR)
        details.append(Detail(field, shorten(problem, 4 * CAP)))
    message = "; ".join(f"{d.field}: {d.problem}" for d in details)
    if len(errors) > len(details):
        message += f"; and {len(errors) - len(details)} more"
    return VmsError(Kind.INVALID_ARGUMENT, message or "invalid request", details)


def validation_error(exc: RequestValidationError) -> VmsError:
    """FastAPI's own refusal of a parameter or body, as a 400 in the one error body."""
    return _problems(list(exc.errors()), 1)


def model_error(exc: ValidationError) -> VmsError:
    """A model built by a handler (a camera's whole configuration) that fails its rules."""
    return _problems(list(exc.errors(include_input=False, include_url=False)), 0)


def http_error(request: Request, exc: HTTPException) -> VmsError:
    """What routing answers itself (no such route, wrong method), in the one error body."""
    path = capped(request.url.path)
    if exc.status_code == 404:
        return VmsError(Kind.NOT_FOUND, f"no route {path}")
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return VmsError(
            Kind.INVALID_ARGUMENT,
            f"method {capped(request.method)} not allowed on {path}; allowed: {allowed}",
        )
    kind = Kind.INVALID_ARGUMENT if exc.status_code < 500 else Kind.INTERNAL
    return VmsError(kind, shorten(str(exc.detail), 4 * CAP))


async def _vms_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VmsError)
    return JSONResponse(exc.to_dict(), status_code=exc.kind.http_status, headers=exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(validation_error(exc).to_dict(), status_code=400)


async def _ws_validation_error(_: object, exc: Exception) -> JSONResponse:
    # A WebSocket's parameters: the answer to its handshake (a denial response).
    assert isinstance(exc, WebSocketRequestValidationError)
    return JSONResponse(_problems(list(exc.errors()), 1).to_dict(), status_code=400)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    # The status stays the framework's (405 is not a Kind) and so do its headers (Allow).
    out = http_error(request, exc).to_dict()
    return JSONResponse(out, status_code=exc.status_code, headers=exc.headers)


async def _bug(_: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises it after this answer, so the server still logs the traceback; the
    # client gets the one body and nothing of the traceback.
    return JSONResponse(VmsError(Kind.INTERNAL, "internal error").to_dict(), status_code=500)


def install(app: FastAPI) -> None:
    """Map every failure of ``app`` to the one body."""
    app.add_exception_handler(VmsError, _vms_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(WebSocketRequestValidationError, _ws_validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _bug)
