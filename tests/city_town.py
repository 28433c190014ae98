"""A small public town for the /city, /open/v1 and /sta/v1.1 tests (no tests of its own).

Written through the same commit path ingest uses. Presint 8: two air stations (the worse one
sets the figures) and a loop; Presint 9: a stale air station behind an offline gateway;
Wetland: a water station with an open flood alarm that an operator acknowledged with a comment;
plus a private station (``"public": false``) and a quarantined record with a secret in it, which
no public answer may show.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from store import alerts as lifecycle
from store import db
from store.writer import QuarantineRow, SensorMeta
from tests.test_api_support import US, raise_alert, us, write

SECRET = "gateway-password-hunter2"
COMMENT = "operator note: call Encik Rahman"


def meta(
    sid: str,
    domain: str,
    district: str,
    lat: float,
    lon: float,
    gateway: str,
    public: bool = True,
    name: str | None = None,
) -> SensorMeta:
    return SensorMeta(
        sensor_id=sid,
        gateway=gateway,
        domain=domain,
        district=district,
        lat=lat,
        lon=lon,
        name=name or sid,
        attributes={} if public else {"public": False, "key": SECRET},
    )


def build(url: str) -> dict[str, int]:
    """Writes the town; returns the ids of its alarms."""
    t = us(datetime.now(UTC))
    h = t // (3600 * US) * 3600 * US  # derived indices are stamped at the start of an hour
    one = np.array
    write(
        url,
        [
            ("AQ-P8-01", "aqi_us", one([h - 3600 * US, h]), one([40.0, 72.0])),
            ("AQ-P8-01", "api_my", one([h]), one([55.0])),
            ("AQ-P8-01", "pm25", one([t - 60 * US]), one([21.4])),
            ("AQ-P8-02", "aqi_us", one([h]), one([151.0])),
            ("AQ-P8-02", "api_my", one([h]), one([120.0])),
            ("AQ-P8-02", "pm25", one([t - 30 * US]), one([56.2])),
            ("LOOP-P8-01", "los", one([h]), one([4.0])),
            ("LOOP-P8-01", "speed", one([t - 30 * US]), one([23.0])),
            # Stale: six hours old, beyond five periods of the hourly index.
            ("AQ-P9-01", "aqi_us", one([h - 6 * 3600 * US]), one([30.0])),
            ("AQ-P9-01", "api_my", one([h - 6 * 3600 * US]), one([28.0])),
            ("WQ-WET-01", "water_level", one([t - 20 * US]), one([3.12])),
            ("WQ-WET-01", "wqi_class", one([h]), one([3.0])),
            ("WQ-WET-01", "do", one([t - 20 * US]), one([6.4])),
            ("PRIV-01", "aqi_us", one([h]), one([499.0])),
            ("PRIV-01", "battery", one([t]), one([12.0])),
        ],
        sensors=[
            meta("AQ-P8-01", "air", "Presint 8", 2.9264, 101.6964, "gw-p8", name="Sekolah P8"),
            meta("AQ-P8-02", "air", "Presint 8", 2.9290, 101.6990, "gw-p8"),
            meta("LOOP-P8-01", "traffic", "Presint 8", 2.9300, 101.7000, "gw-p8"),
            meta("AQ-P9-01", "air", "Presint 9", 2.9050, 101.6800, "gw-p9"),
            meta("WQ-WET-01", "water", "Wetland", 2.9700, 101.6850, "gw-wet", name="Inlet"),
            meta("PRIV-01", "air", "Presint 8", 2.9270, 101.6970, "gw-p8", public=False),
        ],
        quarantine=[
            QuarantineRow(
                received_at=t / US,
                topic="pusat/v1/gw-p8/json",
                gateway="gw-p8",
                reason="malformed_json",
                detail="bad",
                record=None,
                payload=f'{{"password": "{SECRET}"'.encode(),
            )
        ],
    )
    flood = raise_alert(url, "WQ-WET-01", "water_level", "critical", value=3.12)
    with db.connect(url) as conn, conn.transaction(), conn.cursor() as cur:
        lifecycle.acknowledge(cur, flood, "test-operator", COMMENT)
        cur.execute(
            "INSERT INTO gateways (gateway_id, status, status_at)"
            " VALUES ('gw-p9', 'offline', now())"
            " ON CONFLICT (gateway_id) DO UPDATE SET status = 'offline'"
        )
    return {"flood": flood}
