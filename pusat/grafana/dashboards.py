"""The command-centre dashboards, built with grafana-foundation-sdk.

The City Overview is the wall; Air Quality, Traffic, Wetlands, Alarms and Data Health are the
dashboards behind it. The wall playlist cycles through the first five. Every panel reads the
public SQL surface (`pusat.grafana.sql`) through the one PostgreSQL data source; `queries()` lists
each panel query with the columns its panel reads, for the tests that run them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import bargauge, geomap, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import geomap as gm

from pusat.grafana import datasource as ds
from pusat.grafana import layout, sql
from pusat.grafana.sql import Query

FOLDER_UID = "pusat"
FOLDER_TITLE = "Pusat"
TAG = "pusat"
PLAYLIST_UID = "pusat-wall"
PLAYLIST_NAME = "Pusat wall"
PLAYLIST_INTERVAL = "1m"
DISTRICTS_GEOJSON = "public/maps/pusat-districts.geojson"  # served by Grafana itself: no internet

PanelBuilder = (
    bargauge.Panel
    | geomap.Panel
    | stat.Panel
    | statetimeline.Panel
    | table.Panel
    | timeseries.Panel
)

# -- colours and words for the codes the SQL returns ----------------------------------------------


def _steps(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=v, color=c) for v, c in steps])
    )


def _thresholds(*steps: tuple[float | None, str]) -> dm.DynamicConfigValue:
    """Thresholds as a field override (a colour scheme for one field of a panel)."""
    return dm.DynamicConfigValue(id_val="thresholds", value=_steps(*steps).build())


def _names(*items: tuple[int, str, str]) -> list[dm.ValueMapping]:
    return [
        dm.ValueMap(
            options={
                str(code): dm.ValueMappingResult(text=text, color=color, index=i)
                for i, (code, text, color) in enumerate(items)
            }
        )
    ]


SENSOR_STATES = _names(
    (0, "OK", "green"), (1, "info alarm", "blue"), (2, "silent", "#8e8e8e"),
    (3, "warning", "orange"), (4, "critical", "red"),
)  # fmt: skip
SENSOR_STATE_COLOURS = _steps(
    (None, "green"), (1, "blue"), (2, "#8e8e8e"), (3, "orange"), (4, "red")
)
ALARM_STATES = _names(
    (0, "closed", "transparent"), (1, "cleared", "yellow"), (2, "shelved", "#8e8e8e"),
    (3, "acknowledged", "orange"), (4, "flapping", "purple"), (5, "active", "red"),
)  # fmt: skip
LOS = _names(
    (1, "A", "dark-green"), (2, "B", "green"), (3, "C", "yellow"),
    (4, "D", "orange"), (5, "E", "red"), (6, "F", "dark-red"),
)  # fmt: skip
WQI_CLASS = _names(
    (1, "I", "dark-green"), (2, "II", "green"), (3, "III", "yellow"),
    (4, "IV", "orange"), (5, "V", "red"),
)  # fmt: skip
# US EPA AQI categories (2024): good, moderate, USG, unhealthy, very unhealthy, hazardous
AQI_COLOURS = _steps(
    (None, "green"),
    (51, "yellow"),
    (101, "orange"),
    (151, "red"),
    (201, "purple"),
    (301, "#7e0023"),
)
# Malaysian API bands: good, moderate, unhealthy, very unhealthy, hazardous
API_COLOURS = _steps((None, "blue"), (51, "green"), (101, "yellow"), (201, "orange"), (301, "red"))
WQI_CLASS_COLOURS = _steps((None, "green"), (3, "yellow"), (4, "red"))
LOS_COLOURS = _steps((None, "green"), (4, "orange"), (5, "red"))


def _legend() -> cb.VizLegendOptions:
    return (
        cb.VizLegendOptions()
        .show_legend(True)
        .display_mode(cm.LegendDisplayMode.LIST)
        .placement(cm.LegendPlacement.BOTTOM)
    )


def _last() -> cb.ReduceDataOptions:
    return cb.ReduceDataOptions().values(False).calcs(["lastNotNull"]).fields("")


def _timeseries(unit: str) -> timeseries.Panel:
    return timeseries.Panel().unit(unit).legend(_legend()).line_width(1).fill_opacity(10)


def _bars(unit: str) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .unit(unit)
        .legend(_legend())
        .draw_style(cm.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    )


def _stat(unit: str = "none") -> stat.Panel:
    return (
        stat.Panel()
        .unit(unit)
        .reduce_options(_last())
        .graph_mode(cm.BigValueGraphMode.NONE)
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
    )


def _bar_gauge(unit: str = "none") -> bargauge.Panel:
    return (
        bargauge.Panel()
        .unit(unit)
        .reduce_options(_last())
        .display_mode(cm.BarGaugeDisplayMode.BASIC)
        .orientation(cm.VizOrientation.HORIZONTAL)
    )


def _timeline() -> statetimeline.Panel:
    return (
        statetimeline.Panel()
        .show_value(cm.VisibilityMode.AUTO)
        .merge_values(True)
        .fill_opacity(80)
        .legend(_legend())
    )


def _table() -> table.Panel:
    return (
        table.Panel()
        .filterable(True)
        .cell_height(cm.TableCellHeight.SM)
        .cell_options(cm.TableAutoCellOptions())
    )


# -- one dashboard ------------------------------------------------------------------------------


@dataclass
class Board:
    uid: str
    title: str
    description: str
    variables: tuple[str, ...] = ("district",)
    time_from: str = "now-6h"
    refresh: str = "30s"
    alarm_annotations: bool = False
    queries: list[Query] = field(default_factory=list)
    _panels: list[PanelBuilder] = field(default_factory=list)
    _sizes: list[tuple[int, int]] = field(default_factory=list)

    def add(
        self,
        title: str,
        panel: PanelBuilder,
        query: str,
        fmt: ds.Format,
        needs: tuple[str, ...],
        *,
        w: int,
        h: int,
        description: str = "",
        tiered: bool = False,
    ) -> None:
        layout.check_size(w, h)
        panel.id(len(self._panels) + 1).title(title).datasource(ds.ref()).span(w).height(h)
        if description:
            panel.description(description)
        panel.with_target(ds.Sql("A", query, fmt))
        self._panels.append(panel)
        self._sizes.append((w, h))
        self.queries.append(Query(self.uid, title, "A", query, fmt, needs, tiered))

    def build(self) -> dm.Dashboard:
        d = (
            db.Dashboard(self.title)
            .uid(self.uid)
            .description(self.description)
            .tags([TAG])
            .timezone("browser")
            .readonly()  # provisioned from code: changes go through a pull request
            .tooltip(dm.DashboardCursorSync.CROSSHAIR)
            .time(self.time_from, "now")
            .refresh(self.refresh)
            .timepicker(db.TimePicker().refresh_intervals(["10s", "30s", "1m", "5m", "15m"]))
            .link(
                db.DashboardLink("Pusat")
                .type(dm.DashboardLinkType.DASHBOARDS)
                .tags([TAG])
                .as_dropdown(False)
                .include_vars(True)
                .keep_time(True)
                .icon("external link")
                .tooltip("")
                .url("")
                .target_blank(False)
            )
            .annotation(
                db.AnnotationQuery()
                .name("Annotations & Alerts")
                .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
                .enable(True)
                .hide(True)
                .icon_color("rgba(0, 211, 255, 1)")
                .type("dashboard")
                .built_in(1)
                .target(_GrafanaAnnotations(["dashboard"], "dashboard"))
            )
        )
        if self.alarm_annotations:
            d.annotation(
                db.AnnotationQuery()
                .name("Alarm events")
                .datasource(ds.ref())
                .enable(True)
                .hide(False)
                .icon_color("red")
                .target(ds.SqlAnnotation(sql.ALARM_ANNOTATIONS))
            )
            # The same events in Grafana's own store, as `pusat grafana push --annotations`
            # writes them (for a Grafana that cannot reach the database): off by default, since
            # it would draw every event twice.
            d.annotation(
                db.AnnotationQuery()
                .name("Pushed alarm events")
                .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
                .enable(False)
                .hide(False)
                .icon_color("orange")
                .type("tags")
                .target(_GrafanaAnnotations(["pusat", "alarm"], "tags"))
            )
        for name in self.variables:
            d.with_variable(_variable(name))
        for p in self._panels:
            d.with_panel(p)
        built = d.build()
        # Placed here, not by the SDK (see pusat.grafana.layout).
        for panel, (w, h), (x, y) in zip(
            built.panels or [], self._sizes, layout.place(self._sizes), strict=True
        ):
            panel.grid_pos = dm.GridPos(h=h, w=w, x=x, y=y)
        return built


class _GrafanaAnnotationTarget(dm.AnnotationTarget):
    """The built-in annotation store's filter; with a refId, which Grafana gives every query."""

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), "refId": "Anno"}


class _GrafanaAnnotations(cogbuilder.Builder[dm.AnnotationTarget]):
    def __init__(self, tags: list[str], kind: str) -> None:
        self._target = _GrafanaAnnotationTarget(
            limit=100, match_any=False, tags=tags if kind == "tags" else [], type_val=kind
        )

    def build(self) -> dm.AnnotationTarget:
        return self._target


class _QueryVariable(db.QueryVariable):
    def build(self) -> dm.VariableModel:
        v = super().build()
        # The SDK fills in an interval variable's auto-step fields on every variable; Grafana's
        # own types (@grafana/schema) have no such fields on a query variable.
        v.auto = v.auto_min = v.auto_count = None
        return v


def _variable(name: str) -> db.QueryVariable:
    query = {"district": sql.VAR_DISTRICT, "domain": sql.VAR_DOMAIN}[name]
    return (
        _QueryVariable(name)
        .label(name.capitalize())
        .datasource(ds.ref())
        .query(query)
        .multi(True)
        .include_all(True)
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dm.VariableSort.NATURAL_ASC)
        .current(dm.VariableOption(selected=True, text="All", value="$__all"))
    )


# -- the dashboards -----------------------------------------------------------------------------


def _geomap() -> geomap.Panel:
    markers = (
        cb.MapLayerOptions()
        .type("markers")
        .name("Sensors")
        .tooltip(True)
        .location(
            cb.FrameGeometrySource()
            .mode(cm.FrameGeometrySourceMode.COORDS)
            .latitude("latitude")
            .longitude("longitude")
        )
        .config(
            {
                "showLegend": True,
                "style": {
                    "color": {"field": "state", "fixed": "green"},
                    "opacity": 0.9,
                    "size": {"fixed": 9, "min": 4, "max": 14},
                    "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                    "symbolAlign": {"horizontal": "center", "vertical": "center"},
                },
            }
        )
    )
    # The district outlines are a GeoJSON file that Grafana serves itself (mounted by
    # docker-compose.yml), so the wall keeps a base layer in a control room without internet.
    districts = (
        cb.MapLayerOptions()
        .type("geojson")
        .name("Districts")
        .tooltip(True)
        .config(
            {
                "src": DISTRICTS_GEOJSON,
                "rules": [],
                "style": {
                    "color": {"fixed": "#5a7a9a"},
                    "opacity": 0.25,
                    "lineWidth": 1,
                    "textConfig": {"fontSize": 12},
                    "text": {"field": "name", "mode": "field", "fixed": ""},
                },
            }
        )
    )
    return (
        geomap.Panel()
        .view(geomap.MapViewConfig().id("fit").all_layers(True).padding(5).max_zoom(15))
        .controls(geomap.ControlsOptions().show_zoom(True).mouse_wheel_zoom(False))
        .basemap(districts)
        .layers([markers])
        .tooltip(geomap.TooltipOptions().mode(gm.TooltipMode.DETAILS))
        .mappings(SENSOR_STATES)
        .thresholds(SENSOR_STATE_COLOURS)
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
    )


def city_overview() -> Board:
    b = Board(
        "pusat-city",
        "City Overview",
        "The command-centre wall: sensors by state, open alarms, air, traffic, the wetland and"
        " how fresh the data is.",
        variables=("district", "domain"),
    )
    b.add(
        "Sensors",
        _geomap(),
        sql.SENSOR_STATE,
        "table",
        ("sensor_id", "latitude", "longitude", "state"),
        w=12,
        h=14,
        description="Colour: critical or warning alarm, silent (no reading for 15 minutes),"
        " info alarm, OK.",
    )
    b.add(
        "Open alarms",
        _stat()
        .thresholds(_steps((None, "green"), (1, "red")))
        .override_by_name("warning", [_thresholds((None, "green"), (1, "orange"))])
        .override_by_name("info", [_thresholds((None, "green"), (1, "blue"))]),
        sql.OPEN_ALARM_COUNTS,
        "table",
        ("critical", "warning", "info"),
        w=6,
        h=4,
    )
    b.add(
        "Data freshness",
        _stat("none")
        .thresholds(_steps((None, "green")))
        .override_by_name(
            "newest data age",
            [
                dm.DynamicConfigValue(id_val="unit", value="s"),
                _thresholds((None, "green"), (60, "yellow"), (300, "red")),
            ],
        ),
        sql.FRESHNESS,
        "table",
        ("newest data age", "sensors reporting", "sensors"),
        w=6,
        h=4,
    )
    b.add(
        "AQI (US) by district",
        _bar_gauge().thresholds(AQI_COLOURS).min(0).max(300),
        sql.latest_by("aqi_us", "coalesce(s.district, '(none)')", sql.DISTRICT),
        "time_series",
        ("time", "metric", "value"),
        w=6,
        h=10,
        description="Worst station of each district, newest completed hour.",
    )
    b.add(
        "Traffic level of service by district",
        _bar_gauge().mappings(LOS).thresholds(LOS_COLOURS)
        .min(1).max(6),
        sql.latest_by("los", "coalesce(s.district, '(none)')", sql.DISTRICT),
        "time_series",
        ("time", "metric", "value"),
        w=6,
        h=10,
        description="Worst loop station of each district (A free flow ... F breakdown).",
    )  # fmt: skip
    b.add(
        "Wetland water levels",
        _timeseries("lengthm"),
        sql.tiered(f"r.quantity = 'water_level' AND {sql.DISTRICT}", "r.sensor_id"),
        "time_series",
        ("time", "metric", "value"),
        w=12,
        h=8,
        tiered=True,
    )
    b.add(
        "Water quality class",
        _stat().mappings(WQI_CLASS).thresholds(WQI_CLASS_COLOURS),
        sql.latest_by("wqi_class", "s.sensor_id", sql.DISTRICT),
        "time_series",
        ("time", "metric", "value"),
        w=12,
        h=8,
        description="Malaysian DOE-WQI class of each station, newest completed hour.",
    )
    b.add(
        "Open alarms list",
        _table(),
        sql.OPEN_ALARMS,
        "table",
        ("raised", "severity", "state", "sensor", "message"),
        w=24,
        h=8,
    )
    return b


def air_quality() -> Board:
    b = Board("pusat-air", "Air Quality", "Air stations: AQI, API, pollutants.")
    where = f"s.domain = 'air' AND {sql.DISTRICT}"
    b.add(
        "AQI (US) by district",
        _timeseries("none").thresholds(AQI_COLOURS),
        sql.tiered(f"r.quantity = 'aqi_us' AND {sql.DISTRICT}", "s.district", "max"),
        "time_series",
        ("time", "metric", "value"),
        w=12,
        h=9,
        tiered=True,
    )
    b.add(
        "Air Pollutant Index (Malaysia) by district",
        _bar_gauge().thresholds(API_COLOURS).min(0).max(300),
        sql.latest_by("api_my", "coalesce(s.district, '(none)')", sql.DISTRICT),
        "time_series",
        ("time", "metric", "value"),
        w=12,
        h=9,
    )
    for q, unit in (("pm25", "conμgm3"), ("pm10", "conμgm3"), ("no2", "ppb"), ("o3", "ppb")):
        b.add(
            f"{q.upper().replace('PM25', 'PM2.5')} by station",
            _timeseries(unit),
            sql.tiered(f"r.quantity = '{q}' AND {sql.DISTRICT}", "r.sensor_id"),
            "time_series",
            ("time", "metric", "value"),
            w=12,
            h=8,
            tiered=True,
        )
    b.add(
        "What sets the AQI",
        _table(),
        sql.AQI_DOMINANT,
        "table",
        ("sensor", "aqi", "dominant"),
        w=12,
        h=8,
    )
    b.add(
        "Latest readings",
        _table(),
        sql.pivot_latest(("pm25", "pm10", "no2", "o3", "co", "so2", "aqi_us", "api_my"), where),
        "table",
        ("sensor", "district", "pm25", "updated"),
        w=12,
        h=8,
    )
    return b


def _by_station(b: Board, panels: tuple[tuple[str, str, str], ...]) -> None:
    """A time-series panel per (quantity, title, unit), a line per station; long ranges read
    the rollups (sql.tiered)."""
    for q, title, unit in panels:
        b.add(
            f"{title} by station",
            _timeseries(unit),
            sql.tiered(f"r.quantity = '{q}' AND {sql.DISTRICT}", "r.sensor_id"),
            "time_series",
            ("time", "metric", "value"),
            w=12,
            h=8,
            tiered=True,
        )


def traffic() -> Board:
    b = Board(
        "pusat-traffic", "Traffic", "Loop stations: flow, speed, occupancy, level of service."
    )
    b.add(
        "Level of service by station",
        _timeline().mappings(LOS).thresholds(LOS_COLOURS),
        sql.tiered(f"r.quantity = 'los' AND {sql.DISTRICT}", "r.sensor_id", "max"),
        "time_series",
        ("time", "metric", "value"),
        w=24,
        h=9,
        tiered=True,
    )
    _by_station(
        b,
        (
            ("flow", "Flow", "veh/h"),
            ("speed", "Mean speed", "velocitykmh"),
            ("occupancy", "Occupancy", "percent"),
            ("queue_length", "Queue length", "lengthm"),
        ),
    )
    b.add(
        "Latest readings",
        _table(),
        sql.pivot_latest(
            ("flow", "speed", "occupancy", "vehicle_count", "los"),
            f"s.domain = 'traffic' AND {sql.DISTRICT}",
        ),
        "table",
        ("sensor", "district", "flow", "updated"),
        w=24,
        h=8,
    )
    return b


def wetlands() -> Board:
    b = Board(
        "pusat-wetlands", "Wetlands", "The wetland chain and the lake: levels and water quality."
    )
    _by_station(
        b,
        (
            ("water_level", "Water level", "lengthm"),
            ("do", "Dissolved oxygen", "mg/l"),
            ("ph", "pH", "none"),
            ("turbidity", "Turbidity", "NTU"),
            ("wqi_my", "Water Quality Index (DOE)", "none"),
        ),
    )
    b.add(
        "Water quality class by station",
        _timeline().mappings(WQI_CLASS).thresholds(WQI_CLASS_COLOURS),
        sql.tiered(f"r.quantity = 'wqi_class' AND {sql.DISTRICT}", "r.sensor_id", "max"),
        "time_series",
        ("time", "metric", "value"),
        w=12,
        h=8,
        tiered=True,
    )  # fmt: skip
    b.add(
        "Latest readings",
        _table(),
        sql.pivot_latest(
            ("water_level", "water_flow", "do", "ph", "turbidity", "bod", "cod", "an", "tss",
             "wqi_my", "wqi_class"),
            f"s.domain = 'water' AND {sql.DISTRICT}",
        ),
        "table",
        ("sensor", "district", "water_level", "updated"),
        w=24,
        h=8,
    )  # fmt: skip
    return b


def alarms() -> Board:
    b = Board(
        "pusat-alarms",
        "Alarms",
        "Open alarms, their states through time, and the audit trail.",
        variables=("district", "domain"),
        alarm_annotations=True,
    )
    b.add(
        "Open alarms",
        _table(),
        sql.OPEN_ALARMS,
        "table",
        ("raised", "severity", "state", "sensor", "quantity", "rule", "message"),
        w=24,
        h=9,
    )
    b.add(
        "Alarm states",
        _timeline()
        .mappings(ALARM_STATES)
        .thresholds(_steps((None, "transparent"), (1, "yellow"), (3, "orange"), (4, "red"))),
        sql.ALARM_TIMELINE,
        "time_series",
        ("time", "metric", "value"),
        w=24,
        h=10,
    )
    b.add(
        "Alarms raised",
        _bars("none").interval("1h"),
        sql.ALARMS_RAISED,
        "time_series",
        ("time", "metric", "value"),
        w=12,
        h=8,
    )
    b.add(
        "Audit trail",
        _table(),
        sql.AUDIT_TRAIL,
        "table",
        ("time", "sensor", "event", "to_state", "actor"),
        w=12,
        h=8,
    )
    return b


def data_health() -> Board:
    b = Board(
        "pusat-health",
        "Data Health",
        "What ingest rejected and why, how late data arrives, and who went quiet.",
        variables=("district", "domain"),
        time_from="now-24h",
        refresh="1m",
    )
    b.add(
        "Quarantined records by reason",
        _bars("none"),
        sql.QUARANTINE_OVER_TIME,
        "time_series",
        ("time", "metric", "value"),
        w=12,
        h=8,
    )
    b.add(
        "Quarantine reasons",
        _table(),
        sql.QUARANTINE_BY_REASON,
        "table",
        ("reason", "records", "gateways", "newest"),
        w=12,
        h=8,
    )
    b.add(
        "Ingest lag",
        _timeseries("s"),
        sql.INGEST_LAG,
        "time_series",
        ("time", "median lag", "max lag"),
        w=12,
        h=8,
        description="Arrival minus event time of stored readings (at most the range's last day).",
    )
    b.add(
        "Readings stored",
        _bars("none"),
        sql.tiered(sql.DISTRICT + f" AND {sql.DOMAIN}", "'readings'", "count"),
        "time_series",
        ("time", "metric", "value"),
        w=12,
        h=8,
        tiered=True,
    )
    b.add(
        "Offline sensors",
        _table().override_by_name("silent_for", [dm.DynamicConfigValue(id_val="unit", value="s")]),
        sql.OFFLINE_SENSORS,
        "table",
        ("sensor", "domain", "district", "last_reading", "silent_for"),
        w=12,
        h=8,
        description="No reading for 15 minutes, or never.",
    )
    b.add(
        "Gateways",
        _table(),
        sql.GATEWAYS,
        "table",
        ("gateway", "status", "status_at", "last_seen"),
        w=6,
        h=8,
    )
    b.add(
        "Sensors",
        _stat().thresholds(_steps((None, "green"))),
        sql.SENSOR_COUNTS,
        "table",
        ("sensors", "unprovisioned"),
        w=6,
        h=8,
    )
    return b


def boards() -> list[Board]:
    return [city_overview(), air_quality(), traffic(), wetlands(), alarms(), data_health()]


WALL = ("pusat-city", "pusat-air", "pusat-traffic", "pusat-wetlands", "pusat-alarms")


def to_json(d: dm.Dashboard) -> dict[str, Any]:
    """The dashboard as plain JSON data (what Grafana stores)."""
    data: dict[str, Any] = json.loads(json.dumps(d, cls=JSONEncoder))
    return data


def dashboards() -> dict[str, dict[str, Any]]:
    """uid -> dashboard JSON."""
    return {b.uid: to_json(b.build()) for b in boards()}


def queries() -> list[Query]:
    return [q for b in boards() for q in b.queries]


def playlist() -> dict[str, Any]:
    """The wall playlist as Grafana's playlist API takes it."""
    return {
        "uid": PLAYLIST_UID,
        "name": PLAYLIST_NAME,
        "interval": PLAYLIST_INTERVAL,
        "items": [{"type": "dashboard_by_uid", "value": uid} for uid in WALL],
    }
