"""Event times as gateways send them -> float seconds since the Unix epoch (UTC).

Accepted: an RFC 3339 string carrying ``Z`` or a ``+hh:mm``/``-hh:mm`` offset, or a JSON number of
epoch seconds. Strict on purpose: a time without an offset is someone's local time, and guessing
whose would silently shift readings by hours, so it is an error. Every error is a ``ValueError``
whose message can go to quarantine as it is.

Results are bounded to the years 0001-9999 (what RFC 3339 can write), so a later conversion to
integer microseconds cannot overflow and an epoch in milliseconds is caught rather than stored in
the year 57000.
"""

from __future__ import annotations

import math
import re
from datetime import date

EPOCH_MIN = -62135596800.0  # 0001-01-01T00:00:00Z
EPOCH_MAX = 253402300800.0  # 9999-12-31T23:59:60Z, the last instant RFC 3339 can write

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

# RFC 3339 section 5.6; "t"/"z" lower case and a space for "T" are allowed by its notes. The zone
# is optional here only so that a naive time gets its own, clearer, error. ASCII digits only.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))?",
    re.ASCII,
)


def parse_time(x: object) -> float:
    """Epoch seconds (UTC) from an RFC 3339 string or a number of epoch seconds."""
    if isinstance(x, str):
        return _bounded(_rfc3339(x), x)
    # bool is an int subclass, but true/false is never a time.
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise ValueError(
            f"a time must be an RFC 3339 string or epoch seconds, not {type(x).__name__}"
        )
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError(f"epoch seconds must be finite, got {x!r}")
    return _bounded(x, x)


def parse_interval(s: str) -> tuple[float, float]:
    """(start, end) epoch seconds from an RFC 3339 interval ``start/end``; end >= start."""
    if not isinstance(s, str):
        raise ValueError(f"an interval must be a 'start/end' string, not {type(s).__name__}")
    first, sep, second = s.partition("/")
    if not sep or "/" in second:
        raise ValueError(f"interval {_clip(s)} must be 'start/end', two RFC 3339 times")
    start = _bounded(_rfc3339(first), first)
    end = _bounded(_rfc3339(second), second)
    if end < start:
        raise ValueError(f"interval {_clip(s)} ends before it starts")
    return start, end


def _rfc3339(s: str) -> float:
    m = _RFC3339.fullmatch(s)
    if m is None:
        raise ValueError(f"time {_clip(s)} is not RFC 3339 (like 2025-11-27T14:00:00Z)")
    if m[8] is None and m[9] is None:
        raise ValueError(f"time {_clip(s)} has no timezone: add 'Z' or an offset like '+08:00'")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    try:
        days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError as err:  # 2025-02-30, month 13, year 0000
        raise ValueError(f"time {_clip(s)}: {err}") from None
    if hour > 23 or minute > 59 or second > 60:  # 60: a leap second
        raise ValueError(f"time {_clip(s)} has an impossible time of day")
    offset = 0
    if m[9] is not None:
        oh, om = int(m[10]), int(m[11])
        if oh > 23 or om > 59:
            raise ValueError(f"time {_clip(s)} has an impossible offset")
        offset = (oh * 3600 + om * 60) * (1 if m[9] == "+" else -1)
    whole = days * 86400 + hour * 3600 + minute * 60 + second - offset
    return whole + float(m[7]) if m[7] else float(whole)


def _bounded(t: float, raw: object) -> float:
    if EPOCH_MIN <= t <= EPOCH_MAX:
        return float(t)
    hint = ""
    if isinstance(raw, int | float) and EPOCH_MIN * 1000 <= t <= EPOCH_MAX * 1000:
        hint = "; it looks like milliseconds, send seconds"
    raise ValueError(f"time {_clip(raw)} is outside the years 0001-9999{hint}")


def _clip(x: object) -> str:
    """repr, cut short: details go to quarantine and logs, not the whole payload."""
    r = repr(x)
    return r if len(r) <= 60 else r[:57] + "..."
