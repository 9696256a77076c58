"""The chaos tier's own NATS, PostgreSQL and stack: it kills them, so it shares them with no other tier."""


from collections.abc import Iterator

import pytest

from herald.infra import EmbeddedNats, EmbeddedPostgres, free_port
from herald.stack import Stack, StackConfig, migrate
from kernel import signing
from tests.chaos.harness import Cluster

# Settings that keep each fault's recovery within seconds, passed to every service.
CHAOS_ENV = {
    # A webhook that does not answer fails its attempt (to be retried) after 5 s, and a whole attempt
    # (profile lookup, render, provider) after 6 s instead of 20 s. So the dispatcher's ack wait can
    # be 10 s like every other consumer's, instead of its 30 s: an attempt a killed dispatcher left
    # behind is judged `unknown` once older than the ack wait (and 1.5 attempt timeouts), and a
    # message it held is redelivered after it.
    "HERALD_WEBHOOK_TIMEOUT_SECONDS": "5",
    "HERALD_ATTEMPT_TIMEOUT_SECONDS": "6",
    "HERALD_ACK_WAIT_SECONDS": "10",
    # Durable retries of transient provider failures: first after 1 s, then at most 5 s apart.
    "HERALD_RETRY_BASE_SECONDS": "1",
    "HERALD_RETRY_MAX_INTERVAL_SECONDS": "5",
    # The webhook receivers listen on 127.0.0.1, which webhooks may reach only when allowed.
    "HERALD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
}


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """NATS, durable PostgreSQL (it must recover from its WAL) and the six processes, all on free ports."""
    root = tmp_path_factory.mktemp("chaos")
    nats = EmbeddedNats(root / "nats", free_port())
    postgres = EmbeddedPostgres(root / "postgres", free_port(), durable=True)
    config = StackConfig.on_free_ports(root / "stack", postgres.url, nats.url, signing.new_key_pair()[0], CHAOS_ENV)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    running = Cluster(nats, postgres, Stack(config, log_dir=root / "logs"))
    try:
        nats.start()
        postgres.start()
        migrate(postgres.url, nats.url)
        running.stack.start()
        running.stack.wait_ready(timeout=90)
        yield running
    finally:
        running.stop()
