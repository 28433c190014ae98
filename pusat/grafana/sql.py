"""Panel SQL over the public SQL surface (DESIGN.md): sensors, readings, latest, rollup_1m,
rollup_1h, alerts, alert_events, quarantine, derived, gateways. Nothing here reads the physical
tables behind them, so the read-only role's grants are all a panel needs.

Grafana's PostgreSQL macros: ``$__timeFilter(col)``, ``$__timeGroupAlias(col, $__interval)``,
``$__timeFrom()``, ``$__timeTo()``; template variables ``$district`` and ``$domain`` (multi-value,
"All" = every value). Macro arguments never contain parentheses: Grafana's macro parser stops at
the first ``)``.

Time series choose their source by the dashboard's range, inside one query: raw readings up to
3 hours, 1-minute rollups up to 3 days, hourly rollups beyond. The branches not chosen carry a
constant false condition, which PostgreSQL plans as a one-time filter and never scans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RAW_UP_TO = "3 hours"
MINUTE_UP_TO = "3 days"
SILENT_AFTER = "15 minutes"  # a sensor with nothing newer is shown as silent / offline

DISTRICT = "coalesce(s.district, '(none)') IN ($district)"
DOMAIN = "coalesce(s.domain, '(none)') IN ($domain)"

VAR_DISTRICT = "SELECT DISTINCT coalesce(district, '(none)') FROM sensors ORDER BY 1"
VAR_DOMAIN = "SELECT DISTINCT coalesce(domain, '(none)') FROM sensors ORDER BY 1"

_SPAN = "$__timeTo()::timestamptz - $__timeFrom()::timestamptz"

Agg = Literal["mean", "max", "count"]
_RAW_AGG = {"mean": "avg(r.value)", "max": "max(r.value)", "count": "count(*)::float8"}
_ROLLUP_AGG = {
    "mean": "sum(r.sum) / sum(r.count)",
    "max": "max(r.max)",
    "count": "sum(r.count)::float8",
}


def tiered(where: str, metric: str, agg: Agg = "mean") -> str:
    """A long-format time series (time, metric, value) from the source the range calls for.

    ``where`` filters on ``r`` (readings or a rollup view: sensor_id, quantity) and ``s``
    (sensors); ``metric`` names the series (an expression on ``r`` and ``s``).
    """

    def branch(source: str, time_col: str, expr: str, span: str) -> str:
        return (
            f"SELECT $__timeGroupAlias(r.{time_col}, $__interval), {metric} AS metric,"
            f" {expr} AS value\n"
            f"FROM {source} r JOIN sensors s ON s.sensor_id = r.sensor_id\n"
            f"WHERE $__timeFilter(r.{time_col}) AND {where}\n"
            f"  AND {span}\n"
            "GROUP BY 1, 2"
        )

    return (
        branch("readings", "ts", _RAW_AGG[agg], f"{_SPAN} <= interval '{RAW_UP_TO}'")
        + "\nUNION ALL\n"
        + branch(
            "rollup_1m",
            "bucket",
            _ROLLUP_AGG[agg],
            f"{_SPAN} > interval '{RAW_UP_TO}' AND {_SPAN} <= interval '{MINUTE_UP_TO}'",
        )
        + "\nUNION ALL\n"
        + branch("rollup_1h", "bucket", _ROLLUP_AGG[agg], f"{_SPAN} > interval '{MINUTE_UP_TO}'")
        + "\nORDER BY 1, 2"
    )


def latest_by(quantity: str, metric: str, where: str, agg: str = "max") -> str:
    """The newest value of ``quantity`` as one point per ``metric`` (time, metric, value), for
    stats and bar gauges that name each bar after its series."""
    return (
        f'SELECT max(l.ts) AS "time", {metric} AS metric, {agg}(l.value) AS value\n'
        "FROM latest l JOIN sensors s ON s.sensor_id = l.sensor_id\n"
        f"WHERE l.quantity = '{quantity}' AND {where}\n"
        "GROUP BY 2\n"
        "ORDER BY 1, 2"
    )


def pivot_latest(quantities: tuple[str, ...], where: str) -> str:
    """The newest value of each of ``quantities`` per sensor, one column per quantity."""
    cols = ",\n  ".join(
        f"max(l.value) FILTER (WHERE l.quantity = '{q}') AS \"{q}\"" for q in quantities
    )
    return (
        "SELECT s.sensor_id AS sensor, s.district,\n"
        f"  {cols},\n"
        "  max(l.ts) AS updated\n"
        "FROM sensors s JOIN latest l ON l.sensor_id = s.sensor_id\n"
        f"WHERE {where}\n"
        "GROUP BY 1, 2\n"
        "ORDER BY 1"
    )


# -- the City Overview ----------------------------------------------------------------------------

# 0 OK, 1 info alarm, 2 silent (no reading for SILENT_AFTER), 3 warning, 4 critical.
SENSOR_STATE = f"""WITH fresh AS (
  SELECT sensor_id, max(ts) AS last_ts FROM latest GROUP BY sensor_id
), alarm AS (
  SELECT sensor_id,
         max(CASE severity WHEN 'critical' THEN 3 WHEN 'warning' THEN 2 ELSE 1 END) AS level
  FROM alerts WHERE state NOT IN ('closed', 'shelved') GROUP BY sensor_id
)
SELECT s.sensor_id, s.domain, s.district, s.lat AS latitude, s.lon AS longitude,
       CASE WHEN a.level = 3 THEN 4
            WHEN a.level = 2 THEN 3
            WHEN f.last_ts IS NULL OR f.last_ts < now() - interval '{SILENT_AFTER}' THEN 2
            WHEN a.level = 1 THEN 1
            ELSE 0 END AS state,
       f.last_ts AS last_reading
FROM sensors s
LEFT JOIN fresh f ON f.sensor_id = s.sensor_id
LEFT JOIN alarm a ON a.sensor_id = s.sensor_id
WHERE s.lat IS NOT NULL AND s.lon IS NOT NULL AND {DISTRICT} AND {DOMAIN}
ORDER BY s.sensor_id"""

OPEN_ALARM_COUNTS = f"""SELECT count(*) FILTER (WHERE a.severity = 'critical') AS critical,
       count(*) FILTER (WHERE a.severity = 'warning') AS warning,
       count(*) FILTER (WHERE a.severity = 'info') AS info
FROM alerts a LEFT JOIN sensors s ON s.sensor_id = a.sensor_id
WHERE a.state NOT IN ('closed', 'shelved') AND {DISTRICT} AND {DOMAIN}"""

FRESHNESS = f"""SELECT extract(epoch FROM now() - max(l.received_at)) AS "newest data age",
       count(DISTINCT l.sensor_id) FILTER (
         WHERE l.ts > now() - interval '{SILENT_AFTER}') AS "sensors reporting",
       count(DISTINCT s.sensor_id) AS "sensors"
FROM sensors s LEFT JOIN latest l ON l.sensor_id = s.sensor_id
WHERE {DISTRICT} AND {DOMAIN}"""

# -- Alarms ---------------------------------------------------------------------------------------

OPEN_ALARMS = f"""SELECT a.raised_at AS raised, a.severity, a.state, a.sensor_id AS sensor,
       s.district, a.quantity, a.rule, a.message, a.value, a.acked_by, a.id
FROM alerts a LEFT JOIN sensors s ON s.sensor_id = a.sensor_id
WHERE a.state <> 'closed' AND {DISTRICT} AND {DOMAIN}
ORDER BY CASE a.severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END,
         a.raised_at DESC
LIMIT 500"""

# An alarm's state as a number for the state timeline (value mappings turn it back into words).
_STATE_CODE = (
    "CASE to_state WHEN 'active' THEN 5 WHEN 'flapping' THEN 4 WHEN 'acknowledged' THEN 3"
    " WHEN 'shelved' THEN 2 WHEN 'cleared' THEN 1 ELSE 0 END"
)

# Each alarm's state through the range: its state when the range starts (the newest transition
# before it), then every transition inside. Event time for system transitions (it follows the
# readings, also in a replay or a faster-than-real-time simulation), wall time for an operator's.
ALARM_TIMELINE = f"""WITH ev AS (
  SELECT coalesce(e.event_time, e.at) AS t, e.alert_id, e.to_state,
         a.sensor_id || ' ' || coalesce(a.quantity, '') || ' ' || a.severity AS metric
  FROM alert_events e
  JOIN alerts a ON a.id = e.alert_id
  LEFT JOIN sensors s ON s.sensor_id = a.sensor_id
  WHERE {DISTRICT} AND {DOMAIN}
), before_range AS (
  SELECT DISTINCT ON (alert_id) alert_id, metric, to_state
  FROM ev WHERE t < $__timeFrom()
  ORDER BY alert_id, t DESC
)
SELECT $__timeFrom()::timestamptz AS "time", metric, {_STATE_CODE} AS value
FROM before_range WHERE to_state <> 'closed'
UNION ALL
SELECT t, metric, {_STATE_CODE} FROM ev WHERE $__timeFilter(t)
ORDER BY 1, 2"""

ALARMS_RAISED = f"""SELECT $__timeGroupAlias(a.raised_at, $__interval), a.severity AS metric,
       count(*) AS value
FROM alerts a LEFT JOIN sensors s ON s.sensor_id = a.sensor_id
WHERE $__timeFilter(a.raised_at) AND {DISTRICT} AND {DOMAIN}
GROUP BY 1, 2
ORDER BY 1, 2"""

AUDIT_TRAIL = f"""SELECT e.at AS "time", a.sensor_id AS sensor, a.quantity, a.severity, e.event,
       e.from_state, e.to_state, e.actor, e.comment, e.value, a.id AS alarm
FROM alert_events e
JOIN alerts a ON a.id = e.alert_id
LEFT JOIN sensors s ON s.sensor_id = a.sensor_id
WHERE $__timeFilter(e.at) AND {DISTRICT} AND {DOMAIN}
ORDER BY e.at DESC
LIMIT 500"""

# Grafana SQL annotations: a time column, text, and tags as a comma-separated string.
ALARM_ANNOTATIONS = f"""WITH ev AS (
  SELECT coalesce(e.event_time, e.at) AS t, e.event, a.severity, a.sensor_id, a.quantity,
         a.message
  FROM alert_events e
  JOIN alerts a ON a.id = e.alert_id
  LEFT JOIN sensors s ON s.sensor_id = a.sensor_id
  WHERE e.event IN ('raise', 'reraise', 'clear', 'ack', 'close')
    AND {DISTRICT} AND {DOMAIN}
)
SELECT t AS "time",
       severity || ' ' || event || ': ' || sensor_id || coalesce(' ' || quantity, '')
         || coalesce(' - ' || nullif(message, ''), '') AS text,
       'pusat,alarm,' || severity || ',' || event AS tags
FROM ev
WHERE $__timeFilter(t)
ORDER BY 1"""

# -- Data Health ----------------------------------------------------------------------------------

QUARANTINE_OVER_TIME = """SELECT $__timeGroupAlias(q.received_at, $__interval), q.reason AS metric,
       count(*) AS value
FROM quarantine q
WHERE $__timeFilter(q.received_at)
GROUP BY 1, 2
ORDER BY 1, 2"""

QUARANTINE_BY_REASON = """SELECT q.reason, count(*) AS records,
       count(DISTINCT q.gateway_id) AS gateways, max(q.received_at) AS newest
FROM quarantine q
WHERE $__timeFilter(q.received_at)
GROUP BY 1
ORDER BY 2 DESC, 1"""

# Arrival minus event time of each stored reading. It reads raw readings, so it looks at the
# last day of the range at most: lag is a live concern, and a week of raw rows is a slow query.
INGEST_LAG = f"""SELECT $__timeGroupAlias(r.ts, $__interval),
       percentile_cont(0.5) WITHIN GROUP (
         ORDER BY extract(epoch FROM r.received_at - r.ts)) AS "median lag",
       max(extract(epoch FROM r.received_at - r.ts)) AS "max lag"
FROM readings r JOIN sensors s ON s.sensor_id = r.sensor_id
WHERE $__timeFilter(r.ts) AND r.ts > $__timeTo()::timestamptz - interval '1 day'
  AND {DISTRICT} AND {DOMAIN}
GROUP BY 1
ORDER BY 1"""

OFFLINE_SENSORS = f"""SELECT s.sensor_id AS sensor, s.domain, s.district, s.gateway_id AS gateway,
       max(l.ts) AS last_reading,
       extract(epoch FROM now() - max(l.ts)) AS silent_for
FROM sensors s LEFT JOIN latest l ON l.sensor_id = s.sensor_id
WHERE {DISTRICT} AND {DOMAIN}
GROUP BY s.sensor_id, s.domain, s.district, s.gateway_id
HAVING max(l.ts) IS NULL OR max(l.ts) < now() - interval '{SILENT_AFTER}'
ORDER BY max(l.ts) NULLS FIRST, 1"""

GATEWAYS = """SELECT g.gateway_id AS gateway, g.status, g.status_at, g.last_seen
FROM gateways g
ORDER BY g.status = 'online', g.gateway_id"""

SENSOR_COUNTS = f"""SELECT count(*) AS sensors,
       count(*) FILTER (WHERE NOT s.provisioned) AS unprovisioned
FROM sensors s
WHERE {DISTRICT} AND {DOMAIN}"""

# -- Air quality ----------------------------------------------------------------------------------

AQI_DOMINANT = f"""SELECT DISTINCT ON (d.sensor_id) d.sensor_id AS sensor, s.district,
       d.ts AS hour, d.value AS aqi, d.dominant, d.method
FROM derived d JOIN sensors s ON s.sensor_id = d.sensor_id
WHERE d.quantity = 'aqi_us' AND $__timeFilter(d.ts) AND {DISTRICT}
ORDER BY d.sensor_id, d.ts DESC"""


@dataclass(frozen=True)
class Query:
    """One panel query, as the tests see it: which columns its panel reads."""

    dashboard: str  # uid
    panel: str  # title
    ref_id: str
    sql: str
    format: Literal["table", "time_series"]
    needs: tuple[str, ...]
    tiered: bool = False  # reads readings, rollup_1m or rollup_1h by the range
