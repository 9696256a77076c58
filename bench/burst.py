"""The noisy neighbour of the fairness scenario: SDK `track` calls at a steady rate, in a process of its own.

`python -m bench.burst GATEWAY_URL WRITE_KEY RATE CONNECTIONS` sends RATE calls per second over
CONNECTIONS keep-alive connections until a line arrives on stdin (or stdin closes). It prints
`started` at its first answer, and when stopped one JSON line: how many calls it sent, over how
many seconds, how many got each status, the limits its 429s stated (`X-RateLimit-Limit`), and how
many calls it could not send on time because every connection was busy.

Its own process, so that the bench process measuring the quiet workspace does not read its replies
late; a hand-rolled HTTP/1.1 client, so that the load it generates costs little of a machine the
stack shares (about 9 % of a core at 2,000 calls per second).
"""

import asyncio
import base64
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

import orjson
import uvloop

TICK = 0.005  # seconds between two rounds of sends


def _request(host: str, auth: str, i: int, run: str) -> bytes:
    """Call i of the burst as raw HTTP/1.1: a `track` with a messageId of its own."""
    body = orjson.dumps(
        {
            "userId": f"noisy-u{i % 1000}",
            "event": "Noisy Burst",
            "messageId": f"noisy-{run}-{i}",
            "properties": {"n": i},
        }
    )
    return (
        f"POST /v1/track HTTP/1.1\r\nhost: {host}\r\nauthorization: Basic {auth}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


class Burst:
    """The burst's schedule, its connections and what they were answered."""

    def __init__(self, url: str, write_key: str, rate: float, connections: int) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.auth = base64.b64encode(f"{write_key}:".encode()).decode()
        self.rate, self.connections = rate, connections
        self.run = f"{time.time_ns():x}"
        self.jobs: asyncio.Queue[int | None] = asyncio.Queue(maxsize=connections)
        self.statuses: Counter[str] = Counter()
        self.queued = self.sent = self.skipped = 0
        self.limits: set[int] = set()  # the limits the gateway's 429s stated
        self.started = False

    async def connection(self) -> None:
        """One keep-alive connection: send each call queued for it and note its answer's status."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            while (i := await self.jobs.get()) is not None:
                self.sent += 1
                writer.write(_request(f"{self.host}:{self.port}", self.auth, i, self.run))
                try:
                    head = (await reader.readuntil(b"\r\n\r\n")).lower()
                    length = (
                        int(head.split(b"content-length:")[1].split(b"\r\n")[0]) if b"content-length:" in head else 0
                    )
                    await reader.readexactly(length)
                except (ConnectionError, asyncio.IncompleteReadError):
                    # The gateway closed the connection (an idle keep-alive one, say): count it, open another.
                    self.statuses["closed"] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                    continue
                status = head[9:12].decode()
                self.statuses[status] += 1
                if status == "429" and b"x-ratelimit-limit:" in head:
                    self.limits.add(int(head.split(b"x-ratelimit-limit:")[1].split(b"\r\n")[0]))
                if not self.started:
                    print("started", flush=True)
                    self.started = True
        finally:
            writer.close()

    async def pace(self, stop: asyncio.Event) -> float:
        """Queue `rate` calls a second until stopped; a call no connection can take on time is skipped."""
        begun = time.perf_counter()
        while not stop.is_set():
            due = int((time.perf_counter() - begun) * self.rate)
            while self.queued + self.skipped < due:
                try:
                    self.jobs.put_nowait(self.queued)
                    self.queued += 1
                except asyncio.QueueFull:
                    self.skipped += 1
            await asyncio.sleep(TICK)
        return time.perf_counter() - begun

    def finish(self) -> None:
        """Drop the calls still queued and tell each connection to close once its call is answered."""
        while not self.jobs.empty():
            self.jobs.get_nowait()
            self.skipped += 1
        for _ in range(self.connections):
            self.jobs.put_nowait(None)


async def main(url: str, write_key: str, rate: float, connections: int) -> None:
    """Burst until stdin has a line (or closes), then print the counts."""
    burst = Burst(url, write_key, rate, connections)
    workers = [asyncio.create_task(burst.connection()) for _ in range(connections)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopped() -> None:
        loop.remove_reader(sys.stdin.fileno())
        stop.set()

    loop.add_reader(sys.stdin.fileno(), stopped)
    seconds = await burst.pace(stop)
    burst.finish()
    await asyncio.gather(*workers)
    print(
        orjson.dumps(
            {
                "sent": burst.sent,
                "seconds": seconds,
                "skipped": burst.skipped,
                "statuses": dict(burst.statuses),
                "limits": sorted(burst.limits),
            }
        ).decode(),
        flush=True,
    )


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
