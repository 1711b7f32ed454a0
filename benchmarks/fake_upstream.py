"""A GitHub-like OAuth provider and API for the benchmarks: both proxies sit behind this one.

Run: uvicorn benchmarks.fake_upstream:app --host 127.0.0.1 --port N  (any venv with uvicorn)

Shaped like GitHub's OAuth App endpoints (user tokens with expiry, as GitHub Apps issue):

* ``GET /login/oauth/authorize`` — consent already remembered for the static client: 302 to
  ``redirect_uri?code=…&state=…`` at once (what makes the confused deputy possible);
* ``POST /login/oauth/access_token`` — code or refresh grant, JSON when asked for it;
* ``GET /user``, ``GET /user/repos`` (``X-OAuth-Scopes``), ``GET /api/items`` — bearer API;
* ``POST /revoke`` — accepts everything.

Stateless on purpose (a code or token is accepted if it carries our prefix) so that it costs
the same for both proxies and never becomes the bottleneck. Plain ASGI, no framework.

Each authorization is one of ``PEOPLE`` people, drawn at random and carried in the code and
the tokens (``ghc_<n>_…``): concurrent flows are different people, as in a deployment, not
one person authorizing eight times at once (which mcp-consent rightly serialises on that
person's identity row).
"""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlencode

PEOPLE = 1000
ITEMS = [{"id": i, "title": f"Item {i}"} for i in range(1, 6)]
SCOPES = "read:user,repo:read,user"


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send(
    send: Any, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    raw = [(b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Any, status: int, data: Any, extra: list[tuple[bytes, bytes]] = []) -> None:  # noqa: B006
    await _send(
        send, status, json.dumps(data).encode(), [(b"content-type", b"application/json"), *extra]
    )


def _person(credential: str) -> int:
    """The person a code or token (``gh?_<n>_…``) was issued to."""
    number = credential[4:].partition("_")[0]
    return int(number) if number.isdigit() else 0


def _user(person: int) -> dict[str, Any]:
    return {
        "id": 4242 + person,
        "login": f"octocat{person}",
        "name": f"The Octocat {person}",
        "email": f"octo{person}@example.com",
    }


def _tokens(scope: str, person: int) -> dict[str, Any]:
    return {
        "access_token": f"gho_{person}_" + secrets.token_urlsafe(24),
        "token_type": "bearer",
        "scope": scope,
        "expires_in": 28800,
        "refresh_token": f"ghr_{person}_" + secrets.token_urlsafe(40),
        "refresh_token_expires_in": 15897600,
    }


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    if path == "/login/oauth/authorize":
        query = dict(parse_qsl(scope.get("query_string", b"").decode()))
        target = query.get("redirect_uri", "")
        code = f"ghc_{secrets.randbelow(PEOPLE)}_" + secrets.token_urlsafe(16)
        location = (
            target
            + ("&" if "?" in target else "?")
            + urlencode({"code": code, "state": query.get("state", "")})
        )
        await _send(send, 302, b"", [(b"location", location.encode())])
        return
    if path == "/login/oauth/access_token" and scope["method"] == "POST":
        form = dict(parse_qsl((await _body(receive)).decode()))
        grant = form.get("grant_type", "authorization_code")
        given = form.get("code" if grant == "authorization_code" else "refresh_token", "")
        if not given.startswith(("ghc_", "ghr_")):
            await _json(send, 200, {"error": "bad_verification_code"})
            return
        data = _tokens(form.get("scope") or "read:user repo:read", _person(given))
        if "json" in headers.get("accept", ""):
            await _json(send, 200, data)
        else:
            body = urlencode({k: str(v) for k, v in data.items()}).encode()
            await _send(send, 200, body, [(b"content-type", b"application/x-www-form-urlencoded")])
        return
    if path == "/revoke":
        await _body(receive)
        await _send(send, 200)
        return
    authorization = headers.get("authorization", "")
    if not authorization.lower().startswith("bearer gho_"):
        await _json(send, 401, {"message": "Bad credentials"})
        return
    if path == "/user":
        await _json(send, 200, _user(_person(authorization[len("bearer ") :])))
    elif path == "/user/repos":
        await _json(send, 200, [], [(b"x-oauth-scopes", SCOPES.encode())])
    elif path == "/api/items":
        await _json(send, 200, ITEMS)
    else:
        await _json(send, 404, {"message": "Not Found"})
