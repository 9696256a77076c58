"""APNs retires an HTTP/2 connection with a GOAWAY now and then (the sink, hypercorn, after 1,000 requests): the
pushes in flight on it go again at once on a new connection, none is lost or left to a retry."""

import asyncio
import secrets

from services.dispatcher.domain import apns_request
from services.dispatcher.providers import ApnsProvider
from tests.integration.test_push_providers import NOW, PUSH, Sink, apns, sink  # noqa: F401  (fixtures)

PUSHES = 1_200  # past the sink's 1,000 requests per connection
IN_FLIGHT = 32


async def test_pushes_cut_off_by_a_goaway_go_again_on_a_new_connection(sink: Sink, apns: ApnsProvider) -> None:  # noqa: F811
    credentials = await sink.apns_key()
    tokens = [secrets.token_hex(32) for _ in range(PUSHES)]
    request = apns_request(PUSH, credentials.topic, "8d5d7c0e-0000-4000-8000-000000000000", NOW)

    async def worker(mine: list[str]) -> list[str]:
        return [await apns.send(credentials, token, request) for token in mine]

    answers = await asyncio.gather(*(worker(tokens[i::IN_FLIGHT]) for i in range(IN_FLIGHT)))
    assert sum(len(a) for a in answers) == PUSHES
    caught = [p["token"] for p in sink.catcher.pushes]
    assert sorted(set(caught)) == sorted(tokens)  # every push arrived
