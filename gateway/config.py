"""Gateway settings."""

from functools import lru_cache

from pydantic import Field

from kernel.settings import DatabaseSettings, HeraldSettings


class GatewaySettings(HeraldSettings, DatabaseSettings):
    port: int = Field(8000, description="HTTP port")
    ingest_url: str = Field("http://127.0.0.1:8001", description="where the gateway reaches ingest")
    profiles_url: str = Field("http://127.0.0.1:8002", description="where the gateway reaches profiles")
    segmenter_url: str = Field("http://127.0.0.1:8003", description="where the gateway reaches the segmenter")
    scheduler_url: str = Field("http://127.0.0.1:8004", description="where the gateway reaches the scheduler")
    dispatcher_url: str = Field("http://127.0.0.1:8005", description="where the gateway reaches the dispatcher")
    # Segment's limits: 32 KB per call, 500 KB per batch (measured on the decompressed JSON).
    max_call_bytes: int = Field(32 * 1024, description="largest single call accepted (decompressed JSON)")
    max_batch_bytes: int = Field(500 * 1024, description="largest batch accepted (decompressed JSON)")
    key_cache_seconds: float = Field(30.0, description="how long a write or API key lookup is cached")
    upstream_timeout_seconds: float = Field(10.0, description="timeout of calls from the gateway to the services")
    sdk_rate_limit: int = Field(
        1000, ge=1, description="SDK requests per second a workspace may make (all replicas together; `herald rate-limits` sets one workspace's own)"
    )
    api_rate_limit: int = Field(100, ge=1, description="API requests per second a workspace may make (all replicas together)")
    rate_limit_sync_seconds: float = Field(
        0.5, gt=0, description="how often a replica shares its counts; the limit holds across replicas to within this"
    )


@lru_cache
def get_settings() -> GatewaySettings:
    return GatewaySettings()
