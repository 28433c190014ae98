"""Grafana's PostgreSQL data source for Pusat, and the raw-SQL query the SDK has no type for.

Every panel reads the public SQL surface through one data source, connected as the read-only
role that migration 0005 creates (``pusat_grafana``: SELECT on the public views and tables only).
Grafana 11 and 12 name the plugin ``grafana-postgresql-datasource`` and keep the database name in
``jsonData.database``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Self
from urllib.parse import unquote, urlsplit

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import plugins as cogplugins
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as dm

TYPE = "grafana-postgresql-datasource"
UID = "pusat-postgres"
NAME = "Pusat PostgreSQL"
READ_ROLE = "pusat_grafana"

Format = Literal["table", "time_series"]


def ref() -> dm.DataSourceRef:
    return dm.DataSourceRef(type_val=TYPE, uid=UID)


class SqlQuery(cogvariants.Dataquery):
    """A PostgreSQL data source query in code mode: ``rawSql`` and the result ``format``."""

    def __init__(
        self,
        ref_id: str = "A",
        raw_sql: str = "",
        format: Format = "table",
        hide: bool | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format = format
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "datasource": {"type": TYPE, "uid": UID},
            "editorMode": "code",
            "format": self.format,
            "rawQuery": True,
            "rawSql": self.raw_sql,
        }
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(
            ref_id=data.get("refId", "A"),
            raw_sql=data.get("rawSql", ""),
            format=data.get("format", "table"),
            hide=data.get("hide"),
        )


class Sql(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder of a `SqlQuery`, for ``panel.with_target(...)``."""

    def __init__(self, ref_id: str, raw_sql: str, format: Format) -> None:
        self._query = SqlQuery(ref_id, raw_sql, format)

    def build(self) -> SqlQuery:
        return self._query


class SqlAnnotationTarget(dm.AnnotationTarget):
    """An annotation query on the PostgreSQL data source.

    Grafana stores such a query as a regular data query under ``target``; the dashboard schema
    still types ``target`` as the built-in data source's tag filter (its own TODO says it should
    be a data query), so the SQL fields are added here.
    """

    def __init__(self, raw_sql: str, ref_id: str = "Anno") -> None:
        super().__init__(limit=100, match_any=False, tags=[], type_val="dashboard")
        self.raw_sql = raw_sql
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        return {
            **super().to_json(),
            "refId": self.ref_id,
            "editorMode": "code",
            "format": "table",
            "rawQuery": True,
            "rawSql": self.raw_sql,
        }


class SqlAnnotation(cogbuilder.Builder[dm.AnnotationTarget]):
    def __init__(self, raw_sql: str) -> None:
        self._target = SqlAnnotationTarget(raw_sql)

    def build(self) -> SqlAnnotationTarget:
        return self._target


def register() -> None:
    """Teach the SDK's JSON decoder the panel types and our query type (for round trips)."""
    cogplugins.register_default_plugins()
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=TYPE, from_json_hook=SqlQuery.from_json)
    )


@dataclass(frozen=True)
class Connection:
    """Where Grafana's data source connects: the database as Grafana's host sees it."""

    host: str
    port: int
    database: str
    user: str
    password: str | None
    sslmode: str = "disable"

    @classmethod
    def from_url(cls, url: str) -> Connection:
        """From a ``postgresql://user:password@host:port/database?sslmode=...`` URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
            raise ValueError(f"not a postgresql:// URL with a host: {url!r}")
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        return cls(
            host=parts.hostname,
            port=parts.port or 5432,
            database=unquote(parts.path.lstrip("/")) or "postgres",
            user=unquote(parts.username) if parts.username else READ_ROLE,
            password=unquote(parts.password) if parts.password else None,
            sslmode=query.get("sslmode", "disable"),
        )

    def with_user(self, user: str, password: str | None) -> Connection:
        return Connection(self.host, self.port, self.database, user, password, self.sslmode)


def model(conn: Connection, *, password: bool = True) -> dict[str, Any]:
    """The data source as Grafana's HTTP API and provisioning files take it.

    ``password=False`` leaves out ``secureJsonData`` (Grafana never returns it, so it cannot be
    compared, and an update without it keeps the stored password).
    """
    out: dict[str, Any] = {
        "uid": UID,
        "name": NAME,
        "type": TYPE,
        "access": "proxy",
        "url": f"{conn.host}:{conn.port}",
        "user": conn.user,
        "isDefault": True,
        "jsonData": {
            "database": conn.database,
            "sslmode": conn.sslmode,
            "postgresVersion": 1500,
            # $__timeGroup as floor(epoch / interval): the same SQL on plain PostgreSQL (the
            # embedded tier, the tests) and TimescaleDB; time_bucket would fail on the former.
            "timescaledb": False,
            "maxOpenConns": 10,
            "maxIdleConns": 10,
            "connMaxLifetime": 14400,
        },
    }
    if password and conn.password is not None:
        out["secureJsonData"] = {"password": conn.password}
    return out
