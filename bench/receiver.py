"""The webhook sink the benchmark delivers to: its own process, noting when each request arrived.

`POST` anything → 200 and the arrival is kept; `GET /arrivals?since=N` → the arrivals from the
N-th on, as `[[unix_time, body], …]`.
"""

import time
from typing import Any

import orjson

ARRIVALS: list[tuple[float, str]] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":
        since = int(dict(p.split("=") for p in scope["query_string"].decode().split("&") if "=" in p).get("since", 0))
        body = orjson.dumps(ARRIVALS[since:])
    else:
        chunks = b""
        while True:
            message = await receive()
            chunks += message.get("body", b"")
            if not message.get("more_body"):
                break
        ARRIVALS.append((time.time(), chunks.decode()))
        body = b'{"ok":true}'
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
