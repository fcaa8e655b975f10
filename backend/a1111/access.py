"""Who may call the A1111 API, checked before a request's body is read.

The websocket server's rules, in HTTP: a browser ``Origin`` that is not allow-listed is refused
(403, several ``Origin`` headers and ``Origin: null`` included); when the server has a token,
every request carries it as the password of HTTP basic auth — the way A1111's ``--api-auth``
works; the user name is free and tells apart clients behind one address — checked by the same
:class:`Gate` (constant time, failures logged and slowed down); and a body larger than
``max_message_mib`` is refused with 413 from its ``Content-Length`` before any of it is read.
"""

from __future__ import annotations

import base64
import binascii
import logging

from aiohttp import web

from sfumato.protocol import ProtocolError

from ..server.auth import Gate

log = logging.getLogger(__name__)

REALM = 'Basic realm="sfumato", charset="UTF-8"'
MAX_USER_CHARS = 64  # the user name becomes part of a client's identity and of log lines
CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type"


def refuse(status: int, detail: str, **headers: str) -> web.Response:
    """An error answer in the shape A1111's (FastAPI's) errors have: ``{"detail": ...}``."""
    response = web.json_response({"detail": detail}, status=status, headers=headers)
    if status == 413:
        response.force_close()  # the rest of the body is never read: this connection cannot carry another request
    return response


def origin_refusal(request: web.Request, allowed: list[str]) -> web.Response | None:
    origins = request.headers.getall("Origin", [])
    if origins and (len(origins) > 1 or origins[0] not in allowed):
        log.warning("A1111 API: refused a request from origin %s", ", ".join(repr(o[:100]) for o in origins[:4]))
        return refuse(403, "Browser origins are not allowed (see --allow-origin).")
    return None


def cors_headers(request: web.Request) -> dict[str, str]:
    """For an allow-listed browser origin (origin_refusal passed): the headers that let its page read the answer."""
    origin = request.headers.get("Origin")
    if origin is None:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin", "Access-Control-Allow-Credentials": "true"}


def preflight(request: web.Request) -> web.Response:
    headers = cors_headers(request) | {
        "Access-Control-Allow-Methods": CORS_METHODS,
        "Access-Control-Allow-Headers": CORS_HEADERS,
        "Access-Control-Max-Age": "600",
    }
    return web.Response(status=204, headers=headers)


def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    """User and password of an ``Authorization: Basic`` header, or None."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        return None
    return (user, password) if sep else None


async def auth_refusal(request: web.Request, gate: Gate) -> web.Response | None:
    """A 401 when a token is required and not given as the password."""
    credentials = basic_credentials(request)
    try:
        await gate.check(request.remote or "?", credentials[1] if credentials else None)
    except ProtocolError:
        return refuse(401, "Incorrect username or password", **{"WWW-Authenticate": REALM})
    return None


def size_refusal(request: web.Request, limit: int) -> web.Response | None:
    length = request.content_length
    if length is not None and length > limit:
        log.warning("A1111 API: refused a %d-byte body from %s (max_message_mib)", length, request.remote)
        return refuse(413, f"The body has {length} bytes; this server accepts at most {limit} (max_message_mib).")
    return None


def identity(request: web.Request) -> str:
    """One editor in the fair queue per remote address and user name."""
    credentials = basic_credentials(request)
    user = credentials[0][:MAX_USER_CHARS] if credentials else ""
    peer = request.remote or "?"
    return f"{user!r}@{peer}" if user else peer
