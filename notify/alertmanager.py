"""Prometheus Alertmanager's v2 API, as Pusat uses it: alarms posted as alerts, silences made
for shelved alarms, and silences made in Alertmanager matched against alarms.

An alarm's labels are what operators route on (Alertmanager's route tree, inhibition,
silences); `alert_id` ties an Alertmanager alert and a silence to one Pusat alarm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

# The severity label of an escalated alarm: one step up (critical goes to emergency).
ESCALATED = {"info": "warning", "warning": "critical", "critical": "emergency"}
FIRING = ("active", "acknowledged", "flapping", "shelved")


class AlertmanagerError(RuntimeError):
    """Alertmanager could not be reached or refused a request."""


def labels(alarm: dict[str, Any], escalated: bool | None = None) -> dict[str, str]:
    """The label set of an alarm (escalated: with the higher severity and `escalated=true`)."""
    up = alarm.get("escalated_at") is not None if escalated is None else escalated
    found = {
        "alertname": str(alarm["rule"]),
        "alert_id": str(alarm["id"]),
        "severity": ESCALATED[alarm["severity"]] if up else str(alarm["severity"]),
        "domain": alarm.get("domain"),
        "district": alarm.get("district"),
        "sensor": alarm["sensor_id"],
        "quantity": alarm.get("quantity"),
        "rule": alarm["rule"],
        "kind": alarm["kind"],
    }
    if up:
        found["escalated"] = "true"
    return {k: str(v) for k, v in found.items() if v not in (None, "")}


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def firing(alarm: dict[str, Any]) -> bool:
    """Whether Alertmanager should see the alarm as firing: open and its condition holding
    (a shelved or flapping alarm whose condition cleared is resolved there)."""
    if alarm["state"] not in FIRING:
        return False
    return not (alarm["state"] in ("shelved", "flapping") and alarm.get("cleared_at") is not None)


def alert(
    alarm: dict[str, Any], link_base: str, now: datetime, resend_s: float
) -> list[dict[str, Any]]:
    """The alert(s) to post for an alarm as it is now. An escalated alarm has new labels, so the
    alert under its old labels is resolved beside it."""
    link = f"{link_base}/wall#alert-{alarm['id']}"
    annotations = {
        "message": alarm.get("message") or alarm["rule"],
        "value": "" if alarm.get("value") is None else f"{alarm['value']:g}",
        "unit": alarm.get("unit") or "",
        "state": alarm["state"],
        "wall": link,
        "alarm": f"{link_base}/api/v1/alerts/{alarm['id']}",
    }
    if alarm.get("acked_at") is not None:
        annotations["acknowledged"] = f"{alarm.get('acked_by')} at {_iso(alarm['acked_at'])}"
    if alarm.get("shelved_until") is not None:
        annotations["shelved_until"] = _iso(alarm["shelved_until"])
    if alarm.get("escalated_at") is not None:
        annotations["escalated"] = _iso(alarm["escalated_at"])
    if firing(alarm):
        # Like Prometheus: if Pusat stops re-sending, Alertmanager resolves it by itself.
        ends = now + timedelta(seconds=4 * resend_s)
    else:
        ends = alarm.get("closed_at") or alarm.get("cleared_at") or now
        ends = min(ends, now)
    starts = min(alarm["raised_at"], ends)
    body = {
        "labels": labels(alarm),
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": _iso(starts),
        "endsAt": _iso(ends),
        "generatorURL": link,
    }
    out = [body]
    if alarm.get("escalated_at") is not None:
        before = dict(body, labels=labels(alarm, escalated=False))
        before["endsAt"] = _iso(min(alarm["escalated_at"], now))
        out.append(before)
    return out


@dataclass(frozen=True)
class Silence:
    id: str
    state: str  # active, pending, expired
    matchers: list[dict[str, Any]]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str

    def matches(self, label_set: dict[str, str]) -> bool:
        """Alertmanager's matching: every matcher holds (regexes anchored, absent label = "")."""
        for m in self.matchers:
            have = label_set.get(str(m["name"]), "")
            value = str(m.get("value", ""))
            if m.get("isRegex"):
                try:
                    hit = re.fullmatch(value, have) is not None
                except re.error:
                    return False
            else:
                hit = have == value
            if hit != bool(m.get("isEqual", True)):
                return False
        return True


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Alertmanager:
    def __init__(self, url: str, http: httpx.Client) -> None:
        self.base = url.rstrip("/") + "/api/v2"
        self.http = http

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            r = self.http.request(method, self.base + path, **kwargs)
        except httpx.HTTPError as e:
            raise AlertmanagerError(f"{method} {path}: {e}") from e
        if r.status_code >= 300:
            raise AlertmanagerError(f"{method} {path}: HTTP {r.status_code}: {r.text[:500]}")
        return r

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        if alerts:
            self._call("POST", "/alerts", json=alerts)

    def create_silence(
        self, alert_id: int, ends_at: datetime, created_by: str, comment: str
    ) -> str:
        body = {
            "matchers": [
                {"name": "alert_id", "value": str(alert_id), "isRegex": False, "isEqual": True}
            ],
            "startsAt": _iso(datetime.now(UTC)),
            "endsAt": _iso(ends_at),
            "createdBy": created_by,
            "comment": comment or f"shelved in Pusat (alarm {alert_id})",
        }
        return str(self._call("POST", "/silences", json=body).json()["silenceID"])

    def expire_silence(self, silence_id: str) -> None:
        try:
            self._call("DELETE", f"/silence/{silence_id}")
        except AlertmanagerError as e:
            if "HTTP 404" not in str(e):  # already gone: nothing to expire
                raise

    def silences(self) -> list[Silence]:
        return [
            Silence(
                id=str(s["id"]),
                state=str(s["status"]["state"]),
                matchers=list(s.get("matchers") or []),
                starts_at=_time(s["startsAt"]),
                ends_at=_time(s["endsAt"]),
                created_by=str(s.get("createdBy", "")),
                comment=str(s.get("comment", "")),
            )
            for s in self._call("GET", "/silences").json()
        ]
