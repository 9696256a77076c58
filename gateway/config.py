"""Gateway settings."""

from functools import lru_cache

from kernel.settings import DatabaseSettings, HeraldSettings


class GatewaySettings(HeraldSettings, DatabaseSettings):
    port: int = 8000
    ingest_url: str = "http://127.0.0.1:8001"
    profiles_url: str = "http://127.0.0.1:8002"
    segmenter_url: str = "http://127.0.0.1:8003"
    scheduler_url: str = "http://127.0.0.1:8004"
    dispatcher_url: str = "http://127.0.0.1:8005"
    # Segment's limits: 32 KB per call, 500 KB per batch (measured on the decompressed JSON).
    max_call_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    key_cache_seconds: float = 30.0
    upstream_timeout_seconds: float = 10.0


@lru_cache
def get_settings() -> GatewaySettings:
    return GatewaySettings()  # type: ignore[call-arg]
