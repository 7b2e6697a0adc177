"""Input rules every operator-API route shares, enforced once at the edge.

* No NUL character in any string input (path, query, JSON body): PostgreSQL cannot store
  one in text, SQLite truncates at it, and nothing a farm names contains one. Refused with
  a 422 naming the problem, before any route runs.
* ``ApiDatetime``: a timestamp whose UTC offset or UTC value is out of range (Python
  allows offsets up to 23:59; ISO 8601 practice and PostgreSQL stop at 18:00 / 15:59) is a
  422 at validation, not an OverflowError deep in a query.

A pure ASGI middleware (no BaseHTTPMiddleware) so that streaming answers and the hot paths
pay one scan of what they already hold.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

from pydantic import AfterValidator

MAX_OFFSET = dt.timedelta(hours=18)
# A JSON "\u0000" escape not itself escaped (an even number of backslashes before it).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)
_JSON_TYPES = (b"application/json", b"+json")


def _check_datetime(value: dt.datetime) -> dt.datetime:
    offset = value.utcoffset()
    if offset is not None and abs(offset) > MAX_OFFSET:
        raise ValueError("UTC offset out of range (at most +/-18:00)")
    try:
        if offset is not None:
            value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("date out of range once converted to UTC") from None
    return value


ApiDatetime = Annotated[dt.datetime, AfterValidator(_check_datetime)]


def _refuse(where: str) -> tuple[int, bytes]:
    body = json.dumps(
        {
            "detail": [
                {"loc": [where], "msg": "NUL characters are not allowed", "type": "value_error"}
            ]
        }
    ).encode()
    return 422, body


class InputGuard:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = None
        if "\x00" in scope.get("path", ""):
            problem = "path"
        elif b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
            problem = "query"
        if problem is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            ctype = dict(scope.get("headers") or []).get(b"content-type", b"").lower()
            if any(t in ctype for t in _JSON_TYPES):
                chunks: list[bytes] = []
                more = True
                while more:
                    message = await receive()
                    if message["type"] != "http.request":  # client went away
                        return
                    chunks.append(message.get("body", b""))
                    more = message.get("more_body", False)
                body = b"".join(chunks)
                if _JSON_NUL.search(body):
                    problem = "body"
                else:
                    replayed = False

                    async def replay() -> dict[str, Any]:
                        nonlocal replayed
                        if not replayed:
                            replayed = True
                            return {"type": "http.request", "body": body, "more_body": False}
                        return await receive()  # type: ignore[no-any-return]

                    await self.app(scope, replay, send)
                    return
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, payload = _refuse(problem)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def install(app: Any) -> None:
    """Wrap ``app`` (a FastAPI app) so every request passes the guard first."""
    app.add_middleware(InputGuard)
