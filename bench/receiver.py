"""The webhook sink the benchmark delivers to: its own process, noting when each request arrived.

`POST` anything → 200 and the arrival is kept; `GET /arrivals?since=N` → the arrivals from the
N-th on, as `[[unix_time, body], …]`.

It is a bare HTTP/1.1 server (httptools' parser on uvloop, keep-alive, no framework), so that its own
ceiling sits well above what Herald's dispatcher sends: the dispatch scenario must measure Herald, not
the sink. `python -m bench.receiver PORT`.
"""

import asyncio
import sys
import time
from urllib.parse import parse_qs, urlsplit

import httptools
import orjson
import uvloop

ARRIVALS: list[tuple[float, str]] = []


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport; uvloop's is not an asyncio class

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._respond(400, b'{"error":"bad request"}', close=True)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.body = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.parser.get_method() == b"GET":
            query = parse_qs(urlsplit(self.url.decode()).query)
            since = int(query.get("since", ["0"])[0])
            self._respond(200, orjson.dumps(ARRIVALS[since:]), close=not self.parser.should_keep_alive())
            return
        ARRIVALS.append((time.time(), b"".join(self.body).decode()))
        self._respond(200, b'{"ok":true}', close=not self.parser.should_keep_alive())

    def _respond(self, status: int, body: bytes, close: bool) -> None:
        assert self.transport is not None
        reason = b"OK" if status == 200 else b"Bad Request"
        head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n" % (
            status, reason, len(body), b"connection: close\r\n" if close else b""
        )
        self.transport.write(head + body)
        if close:
            self.transport.close()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Connection, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
