"""Gateway settings."""

from functools import lru_cache

from pydantic import Field, SecretStr, model_validator

from kernel import signing
from kernel.settings import LINK_KEY_DESCRIPTION, DatabaseSettings, HeraldSettings, LinkKey, PublicUrl


class GatewaySettings(HeraldSettings, DatabaseSettings):
    port: int = Field(8000, description="HTTP port")
    gateway_signing_key: SecretStr = Field(
        description="the gateway's Ed25519 private key (base64url or PEM) that signs every request it forwards; "
        "only the gateway reads it, and its public key must be one of HERALD_GATEWAY_PUBLIC_KEYS"
    )
    ingest_url: str = Field("http://127.0.0.1:8001", description="where the gateway reaches ingest")
    profiles_url: str = Field("http://127.0.0.1:8002", description="where the gateway reaches profiles")
    segmenter_url: str = Field("http://127.0.0.1:8003", description="where the gateway reaches the segmenter")
    scheduler_url: str = Field("http://127.0.0.1:8004", description="where the gateway reaches the scheduler")
    dispatcher_url: str = Field("http://127.0.0.1:8005", description="where the gateway reaches the dispatcher")
    public_url: PublicUrl = Field(
        None,
        description="the URL SDKs reach this gateway at (https://events.example.com); the settings it serves to "
        "client SDKs point them there. Unset: the host and scheme each request came in on",
    )
    link_key: LinkKey = Field(None, description=LINK_KEY_DESCRIPTION)
    # Segment's limits: 32 KB per call, 500 KB per batch (measured on the decompressed JSON).
    max_call_bytes: int = Field(32 * 1024, description="largest single call accepted (decompressed JSON)")
    max_batch_bytes: int = Field(500 * 1024, description="largest batch accepted (decompressed JSON)")
    key_cache_seconds: float = Field(30.0, description="how long a write key lookup is cached")
    api_key_cache_seconds: float = Field(
        2.0, ge=0, description="how long an API key lookup is cached: a revoked key stops working on every replica within this"
    )
    upstream_timeout_seconds: float = Field(10.0, description="timeout of calls from the gateway to the services")
    sdk_rate_limit: int = Field(
        1000, ge=1, description="SDK requests per second a workspace may make (all replicas together; `herald rate-limits` sets one workspace's own)"
    )
    api_rate_limit: int = Field(100, ge=1, description="API requests per second a workspace may make (all replicas together)")
    rate_limit_sync_seconds: float = Field(
        0.5, gt=0, description="how often a replica shares its counts; the limit holds across replicas to within this"
    )

    @model_validator(mode="after")
    def _signing_key_matches(self) -> "GatewaySettings":
        key = signing.load_private_key(self.gateway_signing_key.get_secret_value())
        trusted = signing.Verifier.from_setting(self.gateway_public_keys).keys
        if signing.key_id(key.public_key()) not in trusted:
            raise ValueError(
                "HERALD_GATEWAY_SIGNING_KEY does not go with any of HERALD_GATEWAY_PUBLIC_KEYS: the services "
                "would refuse every request (`herald keys --public-of KEY` prints a signing key's public key)"
            )
        return self


@lru_cache
def get_settings() -> GatewaySettings:
    return GatewaySettings()
