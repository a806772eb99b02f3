"""Tables: a job and each stored section of its book, and the API keys of principals."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # The listing's order (created_at, id) behind each filter it takes: a page is read off
        # an index, not sorted from every matching job. The status ones also serve the claim.
        Index("ix_jobs_listing", "created_at", "id"),
        Index("ix_jobs_status_listing", "status", "created_at", "id"),
        Index("ix_jobs_owner_listing", "owner", "created_at", "id"),
        Index("ix_jobs_owner_status_listing", "owner", "status", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    character: Mapped[str] = mapped_column(String(200))
    chapters: Mapped[int] = mapped_column(Integer)
    total_words: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(200))
    temperature: Mapped[float | None] = mapped_column(Float, nullable=True)
    language: Mapped[str] = mapped_column(String(40), default="English")
    mode: Mapped[str] = mapped_column(String(20), default="automatic")
    sources: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    # The principal that submitted it: a key's name, or "ip:<address>" when auth is off;
    # None for jobs from before principals existed (only an unrestricted caller sees those).
    owner: Mapped[str | None] = mapped_column(String(80), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    trace_context: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    outline: Mapped[list[dict[str, str]] | None] = mapped_column(JSON, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    # Hand-backs after a retryable LLM provider failure (capped by llm_handback_max).
    llm_handbacks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Sections stored short of the length band after all their attempts.
    sections_out_of_band: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sections_completed: Mapped[int] = mapped_column(Integer, default=0)
    chapters_completed: Mapped[int] = mapped_column(Integer, default=0)
    words_written: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)


class SectionRow(Base):
    """One finished piece of a book: 0 = introduction, 1..n = chapters, n+1 = epilogue."""

    __tablename__ = "sections"
    __table_args__ = (UniqueConstraint("job_id", "index", name="uq_sections_job_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    title: Mapped[str] = mapped_column(String(300))
    text: Mapped[str] = mapped_column(Text)
    words: Mapped[int] = mapped_column(Integer)
    target_words: Mapped[int] = mapped_column(Integer)
    deviation: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SectionTaskRow(Base):
    """Where one piece of a book stands on the worker tier: -1 = outline, then as `sections`.

    The broker only carries "run piece (job, index)"; this row decides who may run it (a lease
    with its owner as fencing token) and whether it already ran, so a redelivered or duplicated
    message has no second effect.
    """

    __tablename__ = "section_tasks"
    __table_args__ = (Index("ix_section_tasks_state", "state", "queued_at"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    title: Mapped[str] = mapped_column(String(300), default="")
    synopsis: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(20), default="queued")  # queued|running|done|failed
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Hand-backs after a retryable LLM provider failure (capped by llm_handback_max).
    llm_handbacks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When its task message was last handed to the broker (None: not yet).
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ApiKeyRow(Base):
    """An API key: only its SHA-256 is stored; `name` is the principal it authenticates.

    Several keys may share a name (a rotation: create the new key, then revoke the old one);
    they are one principal and see the same jobs.
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        Index("ix_api_keys_name", "name"),
    )

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))  # shown by `keys list` to tell keys apart
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    quota: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
