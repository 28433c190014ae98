"""The one settings object: read once at the entry point from PUSAT_* variables, passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class MqttTarget(BaseModel):
    """A broker address parsed from PUSAT_MQTT_URL (mqtt:// or mqtts://)."""

    model_config = ConfigDict(frozen=True)
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> MqttTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"PUSAT_MQTT_URL must start with mqtt:// or mqtts://, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"PUSAT_MQTT_URL has no host: {url!r}")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


class Settings(BaseSettings):
    """Every knob of Pusat. Environment variables are the field names with the prefix PUSAT_."""

    model_config = SettingsConfigDict(env_prefix="PUSAT_", frozen=True, extra="forbid")

    database_url: str | None = Field(
        None, description="PostgreSQL/TimescaleDB URL; unset: the embedded database in PUSAT_HOME"
    )
    read_database_url: str | None = Field(
        None,
        description="a streaming replica of PUSAT_DATABASE_URL that the API reads from (readings,"
        " latest, sensors, alerts, quarantine); writes, tokens and the live stream stay on the"
        " primary; unset: everything on the primary",
    )
    mqtt_url: str | None = Field(
        None, description="mqtt://user:pass@host:port (mqtts:// for TLS); unset: embedded broker"
    )
    home: Path = Field(Path(".pusat"), description="where embedded services keep their data")
    embedded: Literal["auto", "system", "pip"] = Field(
        "auto",
        description="embedded database and broker from Debian's binaries (system), from the"
        " pip-installed fallbacks (pip), or the first available (auto)",
    )
    rules: Path | None = Field(None, description="TOML file of alert rules overriding defaults")
    anonymous_read: bool = Field(False, description="reads need no token (public walls)")
    topic_root: str = Field("pusat/v1", description="MQTT topic root")
    strict: bool = Field(
        False,
        description="quarantine readings of unknown sensors and quantities instead of storing",
    )
    batch_size: int = Field(10000, ge=1, description="readings per ingest batch (at most)")
    batch_ms: int = Field(200, ge=1, description="longest wait before a partial batch is written")
    queue_size: int = Field(
        50000, ge=100, description="messages buffered between the MQTT callback and the worker"
    )
    receive_maximum: int = Field(
        20000, ge=1, le=65535, description="unacknowledged QoS 1 messages the broker may send us"
    )
    max_payload_bytes: int = Field(256 * 1024, ge=64, description="larger messages are quarantined")
    max_skew_s: float = Field(300.0, ge=0, description="accepted clock skew into the future")
    horizon_s: float = Field(
        90 * 86400.0, gt=0, description="readings older than this are rejected as bad_time"
    )
    lorawan_mappings: str | None = Field(
        None,
        description="LoRaWAN mapping files (TOML, one per network-server application),"
        " comma-separated: ingest also reads those applications' ChirpStack or The Things Stack"
        " topics",
    )
    sparkplug_mappings: str | None = Field(
        None,
        description="Sparkplug B mapping files (TOML, one per Sparkplug group), comma-separated:"
        " ingest also reads those groups' spBv1.0 topics as their host application",
    )
    client_id: str = Field("pusat-ingest", description="MQTT client id of an ingest worker")
    group: str | None = Field(None, description="shared-subscription group for scaled-out ingest")
    partition: str | None = Field(
        None,
        pattern=r"^[0-9]+/[0-9]+$",
        description="K/N: this worker takes the gateways of partition K of N (scale-out on"
        " brokers without sticky shared subscriptions, such as Mosquitto)",
    )
    db_idle_in_transaction_s: float = Field(
        5.0,
        gt=0,
        description="the database ends an ingest transaction left waiting on its worker this"
        " long, so that a worker whose host was cut off holds its locks no longer",
    )
    source: Literal["mqtt", "rabbitmq"] = Field(
        "mqtt",
        description="where ingest reads: the MQTT broker, or RabbitMQ's partitioned quorum"
        " queues fed by its MQTT plugin (docs/scaling.md)",
    )
    amqp_urls: str | None = Field(
        None,
        description="comma-separated amqp://user:pass@host:port/vhost of the RabbitMQ cluster's"
        " nodes (source rabbitmq); tried in turn",
    )
    amqp_partitions: int = Field(
        16, ge=1, le=1024, description="quorum queues the gateways' topics are hashed over"
    )
    amqp_prefetch: int = Field(
        1000, ge=1, description="unacknowledged messages per partition queue a worker may hold"
    )
    amqp_heartbeat_s: int = Field(
        4, ge=1, description="AMQP heartbeat: how soon a cut-off worker's partitions move on"
    )
    amqp_handover_s: float = Field(
        1.0,
        ge=0,
        description="a partition newly served waits this long, for its last worker's batch"
        " in flight to commit, before its messages are processed",
    )
    amqp_rebalance_s: float = Field(
        2.0, gt=0, description="how often a worker compares its partitions with its fair share"
    )
    session_expiry_s: int = Field(
        86400, ge=0, description="how long the broker keeps a worker's session while it is away"
    )
    tick_s: float = Field(
        1.0, gt=0, description="how often stale sensors, shelving and flapping are checked"
    )
    index_every_s: float = Field(
        60.0, gt=0, description="how often ingest derives the indices of completed hours"
    )
    city_timezone: str = Field(
        "Asia/Kuala_Lumpur",
        description="the city's IANA time zone (off-peak hours of learned free-flow speeds)",
    )
    retention_readings_days: float = Field(
        30.0, ge=0, description="raw readings older than this are removed (0: kept forever)"
    )
    retention_rollup_1m_days: float = Field(
        365.0, ge=0, description="1-minute rollups older than this are removed (0: kept forever)"
    )
    retention_rollup_1h_days: float = Field(
        0.0, ge=0, description="1-hour rollups older than this are removed (0: kept forever)"
    )
    retention_quarantine_days: float = Field(
        90.0, ge=0, description="quarantined records older than this are removed (0: kept)"
    )
    compress_after_days: float = Field(
        7.0, ge=0, description="TimescaleDB community edition: compress raw chunks this old"
    )
    maintenance_every_s: float = Field(
        3600.0, gt=0, description="how often ingest applies retention (one worker at a time)"
    )
    log_every_s: float = Field(10.0, gt=0, description="how often ingest logs its counters")
    metrics_port: int | None = Field(
        None, description="serve Prometheus metrics here (`pusat ingest`, `pusat notify`)"
    )

    # -- the HTTP API and /wall (api/) ------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="address the HTTP API listens on")
    api_port: int = Field(8080, ge=1, le=65535, description="port the HTTP API listens on")
    forwarded_allow_ips: str = Field(
        "127.0.0.1,::1",
        description="comma-separated addresses (or networks) of reverse proxies whose"
        " X-Forwarded-For the API believes (the client address of the public rate limit);"
        " * for any",
    )
    api_pool_size: int = Field(
        10, ge=1, description="most database connections the API holds at once"
    )
    api_query_timeout_s: float = Field(
        30.0, gt=0, description="an API query running longer is cancelled (statement_timeout)"
    )
    api_max_points: int = Field(
        200_000,
        ge=100,
        description="most points one readings request may return (buckets x series, or raw rows)",
    )
    api_export_chunk_rows: int = Field(
        20_000,
        ge=1,
        description="raw readings a streamed export reads from its cursor and sends at a time",
    )
    api_latest_snapshot_s: float = Field(
        1.0,
        ge=0,
        description="clients asking the same `latest` share one snapshot this many seconds old"
        " at most, or three times its build time if longer (0: worked out per request)",
    )
    api_token_cache_s: float = Field(
        10.0, ge=0, description="how long a checked API token is trusted before a re-check"
    )
    api_group_cache_s: float = Field(
        10.0,
        ge=0,
        description="how long a district's series counts are kept for its panels (group=district)",
    )
    wall_stale_s: float = Field(
        120.0, gt=0, description="the wall's freshness indicator turns red after this silence"
    )
    wall_city_sensors: int = Field(
        2000,
        ge=0,
        description="above this many sensors the wall shows districts (server aggregates),"
        " not every sensor",
    )

    # -- the public side: /city, /open/v1, /sta/v1.1 (api/city.py, api/open_data.py, api/sta.py)
    public: bool = Field(
        True,
        description="serve the public city page /city, open data /open/v1 and SensorThings"
        " /sta/v1.1 without a token (false: they answer 404)",
    )
    city_name: str = Field("Putrajaya", description="the city's name on the public page")
    public_licence: str = Field(
        "CC-BY-4.0", description="licence (SPDX id) the open data is published under"
    )
    public_cache_s: float = Field(
        15.0, ge=0, description="anonymous public answers are cached this long (0: not cached)"
    )
    public_rate_per_s: float = Field(
        20.0, gt=0, description="public requests per second one client address may make"
    )
    public_rate_burst: int = Field(
        60, ge=1, description="public requests one client address may make at once"
    )

    # -- Grafana walls and gateway credentials (pusat/grafana, pusat/gateways.py) -----------------
    grafana_url: str | None = Field(
        None,
        description="the Grafana `pusat grafana push` writes to (user:password@ in it: basic auth)",
    )
    grafana_token: str | None = Field(
        None, description="Grafana service account token for `pusat grafana push`"
    )
    grafana_db_url: str | None = Field(
        None,
        description="PostgreSQL URL of Grafana's data source, as Grafana's host reaches the"
        " database, with the read-only role pusat_grafana; unset: PUSAT_DATABASE_URL's host"
        " and database as pusat_grafana without a password",
    )
    mosquitto_password_file: Path = Field(
        Path("deploy/mosquitto/passwd"), description="Mosquitto password file of the gateways"
    )
    mosquitto_acl_file: Path = Field(
        Path("deploy/mosquitto/acl"), description="Mosquitto ACL file of the gateways"
    )

    # -- alarm notification (notify/) ---------------------------------------------------------
    alertmanager_url: str | None = Field(
        None,
        description="Prometheus Alertmanager (http://host:9093) that alarms are posted to and"
        " whose silences shelve them; unset: no Alertmanager",
    )
    alarm_webhooks: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="comma-separated URLs that get every alarm transition as signed JSON",
    )
    alarm_webhook_secret: SecretStr | None = Field(
        None, description="shared secret of the webhooks' HMAC-SHA256 signature"
    )
    public_url: str | None = Field(
        None,
        description="the API's address as people reach it (behind a proxy: the proxy's), for"
        " alarm links in notifications and the absolute links of /open/v1 and /sta/v1.1;"
        " unset: http://PUSAT_API_HOST:PUSAT_API_PORT",
    )
    notify_every_s: float = Field(
        1.0, gt=0, description="how often the notifier looks for new alarm transitions"
    )
    alertmanager_resend_s: float = Field(
        60.0, gt=0, description="open alarms are re-sent to Alertmanager this often"
    )
    notify_timeout_s: float = Field(10.0, gt=0, description="one delivery attempt's timeout")
    notify_max_backoff_s: float = Field(
        60.0, gt=0, description="longest wait between retries to a receiver that is down"
    )

    @field_validator("alarm_webhooks", mode="before")
    @classmethod
    def _comma_list(cls, v: object) -> object:
        if isinstance(v, str):
            return tuple(u.strip() for u in v.split(",") if u.strip())
        return v

    @field_validator("alarm_webhooks")
    @classmethod
    def _http_urls(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for url in v:
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
                raise ValueError(f"alarm webhook {url!r} is not an http(s):// URL")
        return v

    @model_validator(mode="after")
    def _signed_webhooks(self) -> Settings:
        if self.alarm_webhooks and self.alarm_webhook_secret is None:
            raise ValueError("PUSAT_ALARM_WEBHOOKS needs PUSAT_ALARM_WEBHOOK_SECRET to sign with")
        return self

    def notifies(self) -> bool:
        """Whether any alarm receiver is configured (the notifier has work)."""
        return self.alertmanager_url is not None or bool(self.alarm_webhooks)

    def link_base(self) -> str:
        return (self.public_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")

    @field_validator("city_timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {v!r} (IANA names: Asia/Kuala_Lumpur)") from e
        return v

    @field_validator("topic_root")
    @classmethod
    def _no_wildcards(cls, v: str) -> str:
        if not v or any(c in v for c in "+#") or v.startswith("/") or v.endswith("/"):
            raise ValueError(
                "topic_root must be a plain topic prefix without wildcards or edge '/'"
            )
        return v

    @model_validator(mode="after")
    def _one_way_to_scale_out(self) -> Settings:
        if self.source == "rabbitmq" and (self.group or self.partition):
            raise ValueError(
                "source rabbitmq partitions the stream itself: give no group or partition"
            )
        if self.partition is not None:
            k, n = self.partitions()
            if not 1 <= k <= n:
                raise ValueError(f"partition {self.partition}: K/N needs 1 <= K <= N")
            if self.group:
                raise ValueError(
                    "give a shared-subscription group or a partition, not both: the group"
                    " would split each partition's gateways between its workers again"
                )
        return self

    def partitions(self) -> tuple[int, int]:
        """(K, N) of ``partition``; (1, 1) when unset: one worker takes everything."""
        if self.partition is None:
            return 1, 1
        k, n = self.partition.split("/")
        return int(k), int(n)

    def lorawan_mapping_files(self) -> list[Path]:
        """The files of ``lorawan_mappings``, in order."""
        if not self.lorawan_mappings:
            return []
        return [Path(p.strip()) for p in self.lorawan_mappings.split(",") if p.strip()]

    def sparkplug_mapping_files(self) -> list[Path]:
        """The files of ``sparkplug_mappings``, in order."""
        if not self.sparkplug_mappings:
            return []
        return [Path(p.strip()) for p in self.sparkplug_mappings.split(",") if p.strip()]

    def amqp(self) -> list[str]:
        """The RabbitMQ nodes of ``amqp_urls``, in order."""
        urls = [u.strip() for u in (self.amqp_urls or "").split(",") if u.strip()]
        if not urls:
            raise ValueError("source rabbitmq needs PUSAT_AMQP_URLS (amqp://user:pass@host:port/)")
        for u in urls:
            if urlsplit(u).scheme not in ("amqp", "amqps"):
                raise ValueError(f"PUSAT_AMQP_URLS: {u!r} is not an amqp:// or amqps:// URL")
        return urls

    def mqtt(self) -> MqttTarget:
        if self.mqtt_url is None:
            raise ValueError("no broker configured: set PUSAT_MQTT_URL or run `pusat up`")
        return MqttTarget.parse(self.mqtt_url)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields replaced (CLI flags override the environment)."""
        given = {k: v for k, v in changes.items() if v is not None}
        return type(self)(**{**self.model_dump(), **given})
