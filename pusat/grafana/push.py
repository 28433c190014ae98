"""`pusat grafana push`: the folder, data source, dashboards and wall playlist into a running
Grafana, through its HTTP API (grafana-client); and alarm events as annotations.

Idempotent by comparison: each object is read first and written only when it is missing or
differs, so a second push changes nothing (and a push onto a Grafana provisioned from
``deploy/grafana`` finds the provisioned objects equal and leaves them alone). The order works
on an empty Grafana: folder, data source, dashboards (in the folder, reading the data source),
then the playlist that names the dashboards.

Errors: `PushError` (a ValueError) says which object failed and what Grafana answered.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import niquests
import psycopg
from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from pusat.grafana import dashboards, datasource

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
ANNOTATION_TAGS = ("pusat", "alarm")
# Keys Grafana adds to what it stores; they say nothing about our content.
_VOLATILE = ("id", "version")


class PushError(ValueError):
    """Grafana refused or could not be reached; the message names the object."""


@dataclass
class Report:
    """What a push did, per object: created, updated or unchanged."""

    actions: list[tuple[str, str]] = field(default_factory=list)  # (object, action)

    def add(self, what: str, action: str) -> None:
        log.info("%s: %s", what, action)
        self.actions.append((what, action))

    @property
    def changed(self) -> int:
        return sum(1 for _, a in self.actions if a != "unchanged")


def connect(url: str, token: str | None, timeout: float = TIMEOUT_S) -> GrafanaApi:
    """A client for ``url`` (credentials in it, ``http://user:password@host:3000``, are basic
    auth) with ``token`` as a service account token when given."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PushError(f"not an http(s) URL of a Grafana: {url!r}")
    # grafana-client appends "api" to the path as given: a sub-path needs its trailing slash.
    path = parts.path if parts.path.endswith("/") or not parts.path else parts.path + "/"
    url = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout)
    return cast(GrafanaApi, api)


def _call(what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except GrafanaException as e:
        raise PushError(f"{what}: Grafana answered {e.status_code}: {e.message}") from e
    except niquests.exceptions.RequestException as e:
        raise PushError(f"{what}: cannot reach Grafana: {e}") from e


def _get(api: GrafanaApi, what: str, path: str) -> Any | None:
    """GET ``path``; None when Grafana says it does not exist (404)."""
    try:
        return api.client.GET(path)
    except GrafanaClientError as e:
        if e.status_code == 404:
            return None
        raise PushError(f"{what}: Grafana answered {e.status_code}: {e.message}") from e
    except GrafanaException as e:
        raise PushError(f"{what}: Grafana answered {e.status_code}: {e.message}") from e
    except niquests.exceptions.RequestException as e:
        raise PushError(f"{what}: cannot reach Grafana: {e}") from e


def _same(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> bool:
    """Whether everything we set is set the same in Grafana's copy (which may hold more)."""
    for key, value in ours.items():
        if key in _VOLATILE:
            continue
        if isinstance(value, Mapping):
            other = theirs.get(key)
            if not isinstance(other, Mapping) or not _same(value, other):
                return False
        elif theirs.get(key) != value:
            return False
    return True


def push_folder(api: GrafanaApi, report: Report) -> None:
    what = f"folder {dashboards.FOLDER_UID}"
    found = _get(api, what, f"/folders/{dashboards.FOLDER_UID}")
    if found is None:
        _call(
            what,
            lambda: api.client.POST(
                "/folders", json={"uid": dashboards.FOLDER_UID, "title": dashboards.FOLDER_TITLE}
            ),
        )
        report.add(what, "created")
    elif found.get("title") != dashboards.FOLDER_TITLE:
        _call(
            what,
            lambda: api.client.PUT(
                f"/folders/{dashboards.FOLDER_UID}",
                json={"title": dashboards.FOLDER_TITLE, "overwrite": True},
            ),
        )
        report.add(what, "updated")
    else:
        report.add(what, "unchanged")


def push_datasource(api: GrafanaApi, conn: datasource.Connection, report: Report) -> None:
    what = f"data source {datasource.UID}"
    found = _get(api, what, f"/datasources/uid/{datasource.UID}")
    if found is None:
        body = datasource.model(conn)
        _call(what, lambda: api.client.POST("/datasources", json=body))
        report.add(what, "created")
        return
    # Grafana never returns the password; an update without it keeps the stored one, so only
    # a data source that has none gets it.
    has_password = bool((found.get("secureJsonFields") or {}).get("password"))
    if _same(datasource.model(conn, password=False), found) and (
        has_password or conn.password is None
    ):
        report.add(what, "unchanged")
        return
    body = datasource.model(conn, password=not has_password)
    body["jsonData"] = {**(found.get("jsonData") or {}), **body["jsonData"]}
    _call(what, lambda: api.client.PUT(f"/datasources/uid/{datasource.UID}", json=body))
    report.add(what, "updated")


def push_dashboard(api: GrafanaApi, board: Mapping[str, Any], report: Report) -> None:
    uid = board["uid"]
    what = f"dashboard {uid}"
    found = _get(api, what, f"/dashboards/uid/{uid}")
    if found is not None:
        same_folder = (found.get("meta") or {}).get("folderUid") == dashboards.FOLDER_UID
        if same_folder and _same(board, found.get("dashboard") or {}):
            report.add(what, "unchanged")
            return
    body = {
        "dashboard": {**board, "id": None},
        "folderUid": dashboards.FOLDER_UID,
        "overwrite": True,
        "message": "pusat grafana push",
    }
    _call(what, lambda: api.client.POST("/dashboards/db", json=body))
    report.add(what, "created" if found is None else "updated")


def push_playlist(api: GrafanaApi, playlist: Mapping[str, Any], report: Report) -> None:
    uid = playlist["uid"]
    what = f"playlist {uid}"
    found = _get(api, what, f"/playlists/{uid}")
    if found is None:
        _call(what, lambda: api.client.POST("/playlists", json=dict(playlist)))
        report.add(what, "created")
        return
    items = [{"type": i.get("type"), "value": i.get("value")} for i in found.get("items") or []]
    if (
        found.get("name") == playlist["name"]
        and found.get("interval") == playlist["interval"]
        and items == playlist["items"]
    ):
        report.add(what, "unchanged")
        return
    _call(what, lambda: api.client.PUT(f"/playlists/{uid}", json=dict(playlist)))
    report.add(what, "updated")


def push(api: GrafanaApi, conn: datasource.Connection) -> Report:
    """Folder, data source, dashboards, playlist: in that order, each only when it changed."""
    report = Report()
    push_folder(api, report)
    push_datasource(api, conn, report)
    for board in dashboards.dashboards().values():
        push_dashboard(api, board, report)
    push_playlist(api, dashboards.playlist(), report)
    return report


# -- alarm events as annotations ------------------------------------------------------------------


@dataclass(frozen=True)
class AlarmEvent:
    event_id: int
    alert_id: int
    at: datetime  # event time of a system transition, else when it was made
    event: str
    severity: str
    sensor_id: str
    quantity: str | None
    message: str
    actor: str

    def tag(self) -> str:
        """The tag that makes the push idempotent: one annotation per event."""
        return f"pusat-event:{self.event_id}"

    def annotation(self) -> dict[str, Any]:
        what = f"{self.sensor_id} {self.quantity}" if self.quantity else self.sensor_id
        text = f"{self.severity} {self.event}: {what}"
        if self.message:
            text += f" - {self.message}"
        if self.actor != "system":
            text += f" (by {self.actor})"
        ms = int(self.at.timestamp() * 1000)
        return {
            "time": ms,
            "timeEnd": ms,
            "tags": [*ANNOTATION_TAGS, self.severity, self.event, self.tag()],
            "text": text,
        }


EVENTS_SQL = """SELECT e.id, e.alert_id, coalesce(e.event_time, e.at), e.event, a.severity,
       a.sensor_id, a.quantity, a.message, e.actor
FROM alert_events e JOIN alerts a ON a.id = e.alert_id
WHERE coalesce(e.event_time, e.at) >= %s
ORDER BY e.id"""


def push_annotations(
    api: GrafanaApi, events: Iterable[AlarmEvent], since: datetime, report: Report
) -> None:
    """Each event once, as an organisation-wide annotation tagged ``pusat``, ``alarm``."""
    what = "annotations"
    tags = "&".join(f"tags={t}" for t in ANNOTATION_TAGS)
    since_ms = int(since.timestamp() * 1000)
    now_ms = int((datetime.now(UTC) + timedelta(days=1)).timestamp() * 1000)
    existing = _call(
        what,
        lambda: api.client.GET(
            f"/annotations?{tags}&matchAny=false&from={since_ms}&to={now_ms}&limit=100000"
        ),
    )
    seen = {t for a in existing or [] for t in a.get("tags") or [] if t.startswith("pusat-event:")}
    added = 0
    for ev in events:
        if ev.tag() in seen:
            continue
        post = functools.partial(api.client.POST, "/annotations", json=ev.annotation())
        _call(f"annotation for alarm event {ev.event_id}", post)
        added += 1
    report.add(what, f"{added} added" if added else "unchanged")


def alarm_events(conn: psycopg.Connection[Any], since: datetime) -> list[AlarmEvent]:
    """Alarm transitions since ``since`` (by event time), oldest first."""
    rows = conn.execute(EVENTS_SQL, (since,)).fetchall()
    return [AlarmEvent(*row) for row in rows]
