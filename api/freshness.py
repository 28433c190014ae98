"""How fresh a value is: its age in event time against the quantity's expected period."""

from __future__ import annotations

from datetime import datetime

from processing.catalogue import Catalogue

# The same factor as the default `stale` alert rule (processing/default_rules.toml): a series
# is stale after five expected periods without a reading.
STALE_FACTOR = 5.0
DEFAULT_PERIOD_S = 60.0


def period_s(catalogue: Catalogue, quantity: str) -> float:
    q = catalogue.get(quantity)
    return q.period if q is not None else DEFAULT_PERIOD_S


def age_s(now: datetime, ts: datetime | None) -> float | None:
    return None if ts is None else round((now - ts).total_seconds(), 3)


def stale(catalogue: Catalogue, quantities: list[str], age: float | None) -> bool | None:
    """Stale when the age passes STALE_FACTOR periods of its fastest quantity."""
    if age is None:
        return None
    fastest = min((period_s(catalogue, q) for q in quantities), default=DEFAULT_PERIOD_S)
    return age > STALE_FACTOR * fastest
