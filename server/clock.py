"""Timestamps and ids used across the server's records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from langgraph.checkpoint.base.id import uuid6


def now() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime | None = None) -> str:
    return (dt or now()).isoformat()


def iso_in(seconds: float) -> str:
    return (now() + timedelta(seconds=seconds)).isoformat()


def new_id() -> str:
    """Time-ordered UUID (v6), so ids sort by creation like the reference's v7 ids."""
    return str(uuid6())
