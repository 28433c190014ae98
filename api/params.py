"""Parsing and checking query parameters that FastAPI's types do not cover: durations, times."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from api.errors import bad_request

DURATION_PATTERN = r"^\s*\d{1,9}\s*(s|m|h|d|w)?\s*$"
_DURATION = re.compile(DURATION_PATTERN)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, None: 1}
MAX_DURATION_S = 366 * 86400
# PostgreSQL and Python both handle far wider ranges; this keeps arithmetic on the edges
# (a window widened to whole buckets) from overflowing and catches typos in years.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def duration_s(text: str, name: str) -> int:
    """``90s``, ``5m``, ``1h``, ``1d``, ``2w`` or plain seconds, as whole seconds."""
    m = _DURATION.match(text)
    if not m:
        raise bad_request(f"{name} must be a duration like 90s, 5m, 1h or 1d, not {text!r}")
    seconds = int(text.strip().rstrip("smhdw").strip()) * _UNIT_S[m.group(1)]
    if seconds <= 0:
        raise bad_request(f"{name} must be longer than zero")
    if seconds > MAX_DURATION_S:
        raise bad_request(f"{name} must be at most 366 days")
    return seconds


def format_duration(seconds: int) -> str:
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def aware(t: datetime | None, name: str) -> datetime | None:
    """An RFC 3339 time must say its offset; a time far outside any sensor's life is a typo."""
    if t is None:
        return None
    if t.tzinfo is None or t.utcoffset() is None:
        raise bad_request(
            f"{name} needs a time zone offset (RFC 3339, e.g. 2026-11-27T08:00:00+08:00 or ...Z)"
        )
    if not EARLIEST <= t <= LATEST:
        raise bad_request(f"{name} must be between 1900 and 2200")
    return t.astimezone(UTC)


def window(
    start: datetime | None, end: datetime | None, default: timedelta
) -> tuple[datetime, datetime]:
    """[start, end): end defaults to now, start to end - default; start must be before end."""
    e = aware(end, "end") or datetime.now(UTC)
    s = aware(start, "start") or e - default
    if s >= e:
        raise bad_request(f"start must be before end (start={s.isoformat()}, end={e.isoformat()})")
    return s, e


def csv_list(values: list[str] | None) -> list[str]:
    """Repeated parameters (``?sensor=a&sensor=b``) and comma lists (``?sensor=a,b``) alike."""
    out: list[str] = []
    for v in values or []:
        out += [p.strip() for p in v.split(",") if p.strip()]
    return out
