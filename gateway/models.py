"""Gateway tables: workspaces, apps with write keys, hashed API keys."""

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base

SCHEMA = "gateway"


class Workspace(Base):
    __tablename__ = "workspaces"
    __table_args__ = {"schema": SCHEMA}

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # This workspace's own requests per second, {"sdk": n, "api": n}; None: the gateway's defaults.
    rate_limits: Mapped[dict[str, int] | None] = mapped_column(JSONB(none_as_null=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class App(Base):
    """A source of SDK traffic; its write key is public (it ships inside apps)."""

    __tablename__ = "apps"
    __table_args__ = {"schema": SCHEMA}

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey(f"{SCHEMA}.workspaces.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    write_key: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ApiKey(Base):
    """A secret key for the internal API; only its SHA-256 is stored, the key is shown once."""

    __tablename__ = "api_keys"
    __table_args__ = {"schema": SCHEMA}

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey(f"{SCHEMA}.workspaces.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # What the key may do: "admin", or "<family>:read" / "<family>:write" (gateway.domain.SCOPES).
    scopes: Mapped[list[str]] = mapped_column(JSONB, default=lambda: ["admin"])
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Written at most once per key cache period per gateway replica, when the key is looked up.
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RateCount(Base):
    """Requests one gateway replica admitted for a workspace in one second (rate limits across replicas)."""

    __tablename__ = "rate_counts"
    __table_args__ = {"schema": SCHEMA}

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    replica: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
