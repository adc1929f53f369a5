"""The store's tables, as SQLAlchemy 2.x typed models.

Every primary key starts with `account`, so several DigitalOcean accounts can
share one store. The schema itself is created only by the alembic migrations.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# JSONB on PostgreSQL, JSON (text) on SQLite. A missing value is SQL NULL, not
# JSON `null`, so `WHERE region IS NULL` finds it.
JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp on both databases, always read back as UTC.

    SQLite has no timezone type, so values are stored as naive UTC there.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a timezone-aware column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ImageRow(Base):
    """Every image an account's listing returned, deleted ones kept for history."""

    __tablename__ = "images"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str | None] = mapped_column(Text)
    type: Mapped[str | None] = mapped_column(Text)
    distribution: Mapped[str | None] = mapped_column(Text)
    slug: Mapped[str | None] = mapped_column(Text)
    public: Mapped[bool | None]
    regions: Mapped[Any] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    min_disk_size: Mapped[int | None] = mapped_column(Integer)
    size_gigabytes: Mapped[float | None] = mapped_column(Float)
    description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[Any] = mapped_column(JSONType, nullable=True)
    status: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    raw: Mapped[Any] = mapped_column(JSONType, nullable=False)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ImageRegionRow(Base):
    """One row per (account, image, region slug): "which images are where"."""

    __tablename__ = "image_regions"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    image_id: Mapped[int] = mapped_column(
        BigInteger, primary_key=True, autoincrement=False
    )
    region_slug: Mapped[str] = mapped_column(Text, primary_key=True)

    __table_args__ = (Index(None, "account", "region_slug"),)


class ImageActionRow(Base):
    """Image actions are history: kept even when their image is deleted."""

    __tablename__ = "image_actions"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    image_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    region: Mapped[Any] = mapped_column(JSONType, nullable=True)
    region_slug: Mapped[str | None] = mapped_column(Text)
    resource_id: Mapped[int | None] = mapped_column(BigInteger)
    resource_type: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str | None] = mapped_column(Text)
    type: Mapped[str | None] = mapped_column(Text)
    raw: Mapped[Any] = mapped_column(JSONType, nullable=False)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # When a field last changed: an in-progress transfer that completed.
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (Index(None, "account", "image_id"),)


class SyncRunRow(Base):
    """One row per sync run, whatever its outcome."""

    __tablename__ = "sync_runs"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    images_seen: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    images_added: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    images_updated: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    images_removed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    actions_seen: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    actions_added: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    actions_updated: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    requests: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    rate_limited: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    rate_wait_s: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index(None, "account", "started_at"),)
