"""The indices the command centre reports: US AQI (and NowCast), Malaysian API, DOE-WQI, HCM LOS.

Every breakpoint table is data in ``index_tables.toml`` (one table per index, with its source and
date), loaded once into read-only arrays by :func:`default_tables`; a corrected table is a data
change. Every result names the table that made it (``result.table`` for the index, per-input
``sub_tables``, and per-row ``dominant_table`` for the table that set the value), so a derived
reading can say which table it came from.

Conventions shared by all functions:

- Inputs are scalars or NumPy arrays in Pusat's canonical units (``quantities.toml``); they
  broadcast together and the results have the broadcast shape. Unit conversion, where a table
  wants another unit (ppb -> ppm), happens inside.
- Bad data never raises: NaN, infinite, negative or otherwise out-of-table inputs give NaN.
  ``ValueError`` is kept for caller mistakes (an unknown pollutant key or table, a missing
  argument).
- Categories, classes and levels are float arrays of 1-based codes (NaN where the index is NaN),
  because they become readings (``wqi_class``, ``los``) like any other value.

US AQI above 500 (a decision): the EPA reports concentrations above the top breakpoint as
"Beyond the AQI". For the pollutants whose table ends at 500 we extrapolate the top band's line
and give category 7 (``"Beyond the AQI"``) rather than NaN: a NaN would let a lesser pollutant
set the AQI, or blank the wall, in exactly the worst haze. Such values can exceed the catalogue's
``aqi_us`` range (1000, reached near PM2.5 576 ug/m3). The choice is data (``above`` in the TOML).

Ozone: ``o3`` is the 8-hour average and defines the AQI up to 300 (held at 300 above 0.200 ppm,
where the EPA switches to 1-hour ozone); ``o3_1h`` is optional and, as the EPA asks, the higher
of the two sub-indices is the ozone index. SO2 works the same way with ``so2`` (1-hour, up to
200) and ``so2_24h`` (201 and above).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]
StrArray = npt.NDArray[np.str_]

# Absolute slack (in a table's unit) for float noise at band edges and in truncation: far below
# the resolution of any table (0.001 ppm), far above the rounding error of the values involved.
_TOL = 1e-9

_ABOVE = ("extrapolate", "cap", "nan")
_WQI_SUBS = ("do", "bod", "cod", "an", "ss", "ph")


# --- tables -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bands:
    """One piecewise-linear sub-index table: I = i_lo + (C - c_lo) * slope, C in the table unit."""

    table: str
    pollutant: str
    averaging: str
    unit: str
    scale: float  # canonical unit -> table unit
    truncate: float  # truncation step in the table unit; 0 for none
    above: str  # beyond the top c_hi: "extrapolate" | "cap" | "nan"
    decimals: int
    mark: str
    c_lo: FloatArray
    c_hi: FloatArray
    i_lo: FloatArray
    i_hi: FloatArray
    slope: FloatArray


@dataclass(frozen=True)
class AirTable:
    name: str
    source: str
    date: str
    category_upper: FloatArray
    labels: tuple[str, ...]
    inputs: Mapping[str, Bands]
    emergency_above: float
    several_mark: str


@dataclass(frozen=True)
class NowcastSpec:
    name: str
    source: str
    hours: int
    min_weight: float
    recent_hours: int
    recent_valid: int


@dataclass(frozen=True)
class WqiSub:
    name: str
    weight: float
    valid_lo: float
    valid_hi: float
    upto: FloatArray  # upper bound of each segment
    closed: BoolArray  # whether that bound belongs to the segment
    poly: FloatArray  # (segments, degree + 1), lowest power first
    exp: FloatArray  # (segments, 2): a * e**(k * x)
    abs: FloatArray  # (segments, 2): b * |x - x0|


@dataclass(frozen=True)
class WqiTable:
    name: str
    source: str
    date: str
    clamp: tuple[float, float]
    subs: Mapping[str, WqiSub]
    class_lower: FloatArray
    class_lower_inclusive: BoolArray
    class_labels: tuple[str, ...]
    status_lower: FloatArray
    status_labels: tuple[str, ...]


@dataclass(frozen=True)
class DoSaturation:
    name: str
    poly: FloatArray
    temp_lo: float
    temp_hi: float


@dataclass(frozen=True)
class LosTable:
    name: str
    source: str
    date: str
    measure: str  # "speed_ratio" | "density" | "control_delay"
    unit: str
    scale: float
    better: str  # "higher" | "lower"
    bounds: FloatArray
    f_above_vc: float
    labels: tuple[str, ...]


@dataclass(frozen=True)
class IndexTables:
    aqi_us: AirTable
    api_my: AirTable
    nowcast: Mapping[str, NowcastSpec]
    wqi_my: WqiTable
    do_saturation: DoSaturation
    los: Mapping[str, LosTable]
    vehicle_length_m: float
    loop_length_m: float


def _frozen(values: Any, dtype: type = np.float64) -> Any:
    # Read-only, so the cached tables really are frozen and shared safely.
    a: npt.NDArray[Any] = np.array(values, dtype=dtype)
    a.flags.writeable = False
    return a


def _bands(raw: Mapping[str, Any], decimals: int, rows_are: str) -> Bands:
    rows = np.array(raw["bands" if rows_are == "i_hi" else "segments"], dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != 4 or len(rows) == 0:
        raise ValueError(f"{raw['table']}: each band needs 4 numbers")
    c_lo, c_hi, i_lo = rows[:, 0], rows[:, 1], rows[:, 2]
    if rows_are == "i_hi":  # EPA form: [C_lo, C_hi, I_lo, I_hi]
        i_hi = rows[:, 3]
        slope = (i_hi - i_lo) / (c_hi - c_lo)
    else:  # DOE form: [C_lo, C_hi, I_lo, slope]
        slope = rows[:, 3]
        with np.errstate(invalid="ignore"):
            i_hi = i_lo + slope * (c_hi - c_lo)
    if np.any(np.diff(c_lo) <= 0) or np.any(c_hi < c_lo):
        raise ValueError(f"{raw['table']}: bands must ascend")
    above = str(raw.get("above", "extrapolate"))
    if above not in _ABOVE:
        raise ValueError(f"{raw['table']}: above must be one of {_ABOVE}")
    return Bands(
        table=str(raw["table"]),
        pollutant=str(raw["pollutant"]),
        averaging=str(raw["averaging"]),
        unit=str(raw["unit"]),
        scale=float(raw["scale"]),
        truncate=float(raw.get("truncate", 0.0)),
        above=above,
        decimals=decimals,
        mark=str(raw.get("mark", "")),
        c_lo=_frozen(c_lo),
        c_hi=_frozen(c_hi),
        i_lo=_frozen(i_lo),
        i_hi=_frozen(i_hi),
        slope=_frozen(slope),
    )


def _air_table(raw: Mapping[str, Any], rows_are: str) -> AirTable:
    decimals = int(raw["decimals"])
    inputs = {key: _bands(entry, decimals, rows_are) for key, entry in raw["input"].items()}
    labels = [str(s) for s in raw["category_labels"]]
    if "beyond_label" in raw:
        labels.append(str(raw["beyond_label"]))
    return AirTable(
        name=str(raw["name"]),
        source=str(raw["source"]),
        date=str(raw["date"]),
        category_upper=_frozen(raw["category_upper"]),
        labels=tuple(labels),
        inputs=MappingProxyType(inputs),
        emergency_above=float(raw.get("emergency_above", math.inf)),
        several_mark=str(raw.get("several_mark", "&")),
    )


def _wqi_sub(name: str, raw: Mapping[str, Any]) -> WqiSub:
    segs = raw["segments"]
    degree = max(len(s["poly"]) for s in segs)
    poly = np.zeros((len(segs), degree))
    for j, s in enumerate(segs):
        poly[j, : len(s["poly"])] = s["poly"]
    lo, hi = (float(v) for v in raw["valid"])
    return WqiSub(
        name=name,
        weight=float(raw["weight"]),
        valid_lo=lo,
        valid_hi=hi,
        upto=_frozen([s["upto"] for s in segs]),
        closed=_frozen([bool(s.get("closed", True)) for s in segs], np.bool_),
        poly=_frozen(poly),
        exp=_frozen([s.get("exp", [0.0, 0.0]) for s in segs]),
        abs=_frozen([s.get("abs", [0.0, 0.0]) for s in segs]),
    )


def _wqi_table(raw: Mapping[str, Any]) -> WqiTable:
    subs = {name: _wqi_sub(name, entry) for name, entry in raw["sub"].items()}
    if set(subs) != set(_WQI_SUBS):
        raise ValueError(f"wqi_my needs exactly the sub-indices {_WQI_SUBS}")
    if abs(sum(s.weight for s in subs.values()) - 1.0) > 1e-9:
        raise ValueError("wqi_my weights must sum to 1")
    lo, hi = (float(v) for v in raw["clamp"])
    return WqiTable(
        name=str(raw["name"]),
        source=str(raw["source"]),
        date=str(raw["date"]),
        clamp=(lo, hi),
        subs=MappingProxyType(subs),
        class_lower=_frozen(raw["class_lower"]),
        class_lower_inclusive=_frozen(raw["class_lower_inclusive"], np.bool_),
        class_labels=tuple(str(s) for s in raw["class_labels"]),
        status_lower=_frozen(raw["status_lower"]),
        status_labels=tuple(str(s) for s in raw["status_labels"]),
    )


def _los_table(name: str, raw: Mapping[str, Any]) -> LosTable:
    better = str(raw["better"])
    bounds = _frozen(raw["bounds"])
    step = np.diff(bounds)
    if better not in ("higher", "lower") or np.any(step >= 0 if better == "higher" else step <= 0):
        raise ValueError(f"{name}: bounds must run from A to F")
    return LosTable(
        name=name,
        source=str(raw["source"]),
        date=str(raw["date"]),
        measure=str(raw["measure"]),
        unit=str(raw["unit"]),
        scale=float(raw.get("scale", 1.0)),
        better=better,
        bounds=bounds,
        f_above_vc=float(raw.get("f_above_vc", math.inf)),
        labels=tuple(str(s) for s in raw["labels"]),
    )


def from_mapping(data: Mapping[str, Any]) -> IndexTables:
    """Index tables from parsed TOML; a malformed table raises ``ValueError`` here, at load."""
    aqi = _air_table(data["aqi_us"], "i_hi")
    api = _air_table(data["api_my"], "slope")
    nowcast = {
        key: NowcastSpec(
            name=str(e["name"]),
            source=str(e["source"]),
            hours=int(e["hours"]),
            min_weight=float(e["min_weight"]),
            recent_hours=int(e["recent_hours"]),
            recent_valid=int(e["recent_valid"]),
        )
        for key, e in data["nowcast"].items()
    }
    ds = data["do_saturation"]
    t_lo, t_hi = (float(v) for v in ds["valid_temperature"])
    return IndexTables(
        aqi_us=aqi,
        api_my=api,
        nowcast=MappingProxyType(nowcast),
        wqi_my=_wqi_table(data["wqi_my"]),
        do_saturation=DoSaturation(str(ds["name"]), _frozen(ds["poly"]), t_lo, t_hi),
        los=MappingProxyType({k: _los_table(k, e) for k, e in data["los"].items()}),
        vehicle_length_m=float(data["loop"]["vehicle_length_m"]),
        loop_length_m=float(data["loop"]["loop_length_m"]),
    )


def load(path: Path | None = None) -> IndexTables:
    """The tables shipped with Pusat, or ones read from ``path`` (not cached)."""
    if path is None:
        text = resources.files("processing").joinpath("index_tables.toml").read_text("utf-8")
    else:
        text = path.read_text("utf-8")
    return from_mapping(tomllib.loads(text))


@lru_cache(maxsize=1)
def default_tables() -> IndexTables:
    """The shipped tables, parsed once; the data is frozen, so sharing it is safe."""
    return load()


def _use(tables: IndexTables | None) -> IndexTables:
    return default_tables() if tables is None else tables


# --- results ------------------------------------------------------------------------------------


def _labels_of(code: FloatArray, labels: Sequence[str]) -> StrArray:
    lut = np.array(["", *labels])
    idx = np.where(np.isnan(code), 0, code).astype(np.intp)
    out: StrArray = lut[idx]
    return out


@dataclass(frozen=True)
class IndexResult:
    """An air index over arrays.

    value: the index (the largest sub-index), NaN where no sub-index is defined.
    category: 1-based band of ``value`` (``labels[category - 1]``), NaN with it.
    sub / sub_tables: the sub-index of each input given, and the table it used.
    dominant: the pollutant(s) that set ``value``, comma-joined on ties; "" where NaN.
    dominant_table: the table(s) that set ``value``, e.g. "epa-aqi-2024/pm25".
    """

    table: str
    value: FloatArray
    category: FloatArray
    labels: tuple[str, ...]
    sub: Mapping[str, FloatArray]
    sub_tables: Mapping[str, str]
    dominant: StrArray
    dominant_table: StrArray

    def category_label(self) -> StrArray:
        return _labels_of(self.category, self.labels)


@dataclass(frozen=True)
class ApiResult(IndexResult):
    """The Malaysian API: an :class:`IndexResult` plus the published mark and the emergency flag.

    mark: ``**`` PM2.5, ``*`` PM10, ``a`` SO2, ``b`` NO2, ``c`` O3, ``d`` CO, ``&`` several.
    """

    mark: StrArray
    emergency: BoolArray


@dataclass(frozen=True)
class WqiResult:
    """DOE-WQI: the index, its sub-indices, NWQS class (1..5 for I..V) and status (1..3)."""

    table: str
    value: FloatArray
    sub: Mapping[str, FloatArray]
    wqi_class: FloatArray
    class_labels: tuple[str, ...]
    status: FloatArray
    status_labels: tuple[str, ...]

    def class_label(self) -> StrArray:
        return _labels_of(self.wqi_class, self.class_labels)

    def status_label(self) -> StrArray:
        return _labels_of(self.status, self.status_labels)


@dataclass(frozen=True)
class LosResult:
    """Level of service 1..6 (A..F) and the service measure it was read from, in ``unit``."""

    table: str
    value: FloatArray
    measure: FloatArray
    unit: str
    labels: tuple[str, ...]

    def label(self) -> StrArray:
        return _labels_of(self.value, self.labels)


# --- air indices --------------------------------------------------------------------------------


def _round_half_up(x: FloatArray, decimals: int) -> FloatArray:
    # The EPA rounds half up (50.5 -> 51); np.round would round half to even.
    f = 10.0**decimals
    out: FloatArray = np.floor(x * f + 0.5 + _TOL) / f
    return out


def sub_index(bands: Bands, concentration: npt.ArrayLike) -> FloatArray:
    """One pollutant's sub-index from a concentration in Pusat's canonical unit."""
    x = np.asarray(concentration, dtype=np.float64) * bands.scale
    ok = np.isfinite(x) & (x >= 0)
    x = np.where(ok, x, 0.0)
    if bands.truncate > 0:
        # EPA: truncate (not round) to the table's resolution before the lookup.
        x = np.floor(x / bands.truncate + _TOL) * bands.truncate
    k = np.searchsorted(bands.c_lo, x + _TOL, side="right") - 1
    ok &= k >= 0  # below the first band: a blank cell of the table
    k = np.clip(k, 0, len(bands.c_lo) - 1)
    i = bands.i_lo[k] + (x - bands.c_lo[k]) * bands.slope[k]
    over = x > bands.c_hi[-1] + _TOL
    if bands.above == "cap":
        i = np.where(over, bands.i_hi[-1], i)
    elif bands.above == "nan":
        ok &= ~over
    i = _round_half_up(i, bands.decimals)
    ok &= np.isfinite(i)
    out: FloatArray = np.where(ok, i, np.nan)
    return out


def _category(value: FloatArray, upper: FloatArray) -> FloatArray:
    nan = np.isnan(value)
    k = np.searchsorted(upper, np.where(nan, 0.0, value), side="left") + 1
    out: FloatArray = np.where(nan, np.nan, k.astype(np.float64))
    return out


def _nanmax(stack: FloatArray) -> FloatArray:
    # np.nanmax warns on all-NaN rows; a missing index is normal here, not a warning.
    m = np.where(np.isnan(stack), -np.inf, stack).max(axis=0)
    out: FloatArray = np.where(m == -np.inf, np.nan, m)
    return out


def _joined(values: Sequence[str], code: int) -> str:
    return ",".join(dict.fromkeys(v for j, v in enumerate(values) if code >> j & 1))


def _air_index(
    table: AirTable, concentrations: Mapping[str, npt.ArrayLike]
) -> tuple[IndexResult, IntArray, list[Bands]]:
    unknown = sorted(set(concentrations) - set(table.inputs))
    if unknown or not concentrations:
        raise ValueError(f"{table.name}: give some of {sorted(table.inputs)}, not {unknown}")
    keys = [k for k in table.inputs if k in concentrations]  # table order: ties list stably
    arrays = np.broadcast_arrays(*(np.asarray(concentrations[k], dtype=np.float64) for k in keys))
    bands = [table.inputs[k] for k in keys]
    sub = {k: sub_index(b, a) for k, b, a in zip(keys, bands, arrays, strict=True)}
    stack = np.stack([sub[k] for k in keys])
    value = _nanmax(stack)
    # Which inputs set the value, as a bit mask per row; small lookup tables turn it into
    # pollutant names, table names and marks without a Python loop over rows.
    code = np.zeros(value.shape, dtype=np.intp)
    for j in range(len(keys)):
        code |= (stack[j] == value).astype(np.intp) << j
    codes = range(1 << len(keys))
    dominant = np.array([_joined([b.pollutant for b in bands], c) for c in codes])[code]
    dominant_table = np.array([_joined([b.table for b in bands], c) for c in codes])[code]
    result = IndexResult(
        table=table.name,
        value=value,
        category=_category(value, table.category_upper),
        labels=table.labels,
        sub=MappingProxyType(sub),
        sub_tables=MappingProxyType({k: b.table for k, b in zip(keys, bands, strict=True)}),
        dominant=dominant,
        dominant_table=dominant_table,
    )
    return result, code, bands


def aqi_us(
    concentrations: Mapping[str, npt.ArrayLike], *, tables: IndexTables | None = None
) -> IndexResult:
    """US EPA AQI (2024) from averaged concentrations in canonical units.

    Keys (give any subset): ``pm25``, ``pm10`` (24 h, ug/m3), ``o3`` (8 h, ppb), ``o3_1h`` (ppb),
    ``co`` (8 h, ppm), ``so2`` (1 h, ppb), ``so2_24h`` (ppb), ``no2`` (1 h, ppb). For hourly
    reporting pass the NowCast (:func:`nowcast`) as ``pm25``/``pm10``/``o3``.
    Concentrations are truncated as the EPA says (PM2.5, CO to 0.1; PM10, SO2, NO2 to 1;
    O3 to 0.001 ppm), sub-indices are rounded half up, and the AQI is their maximum. A pollutant
    whose value is NaN for a row is left out of that row; no defined sub-index gives NaN.
    """
    result, _, _ = _air_index(_use(tables).aqi_us, concentrations)
    return result


def api_my(
    concentrations: Mapping[str, npt.ArrayLike], *, tables: IndexTables | None = None
) -> ApiResult:
    """Malaysian Air Pollutant Index from averaged concentrations in canonical units.

    Keys (any subset): ``pm25``, ``pm10`` (24 h, ug/m3), ``so2`` (24 h, ppb), ``no2`` (1 h, ppb),
    ``o3`` (1 h, ppb), ``co`` (8 h, ppm). Sub-indices follow the DOE's PSI-based equations and
    are rounded half up; PM2.5 (truncated to 0.1 ug/m3) uses the DOE's PM2.5 table
    (``doe-api/pm25``, its source in ``index_tables.toml``). ``mark`` is the published
    dominant-pollutant mark, ``&`` when several pollutants share the maximum.
    """
    table = _use(tables).api_my
    result, code, bands = _air_index(table, concentrations)
    marks = [b.mark for b in bands]
    pollutants = [b.pollutant for b in bands]

    def mark_of(c: int) -> str:
        chosen = dict.fromkeys(p for j, p in enumerate(pollutants) if c >> j & 1)
        if len(chosen) > 1:
            return table.several_mark
        return next((marks[j] for j in range(len(bands)) if c >> j & 1), "")

    mark = np.array([mark_of(c) for c in range(1 << len(bands))])[code]
    emergency = np.asarray(result.value > table.emergency_above, dtype=np.bool_)
    return ApiResult(**result.__dict__, mark=mark, emergency=emergency)


def nowcast(
    hourly: npt.ArrayLike, pollutant: str = "pm25", *, tables: IndexTables | None = None
) -> FloatArray:
    """EPA NowCast over the last axis of ``hourly`` (hourly averages, oldest first, newest last).

    ``pollutant`` ``pm25``/``pm10``: the last 12 hours, weight factor
    w = max(min/max, 0.5); ``o3``: the AirNow ozone variant, the last 8 hours and no minimum
    weight factor (read its result on the 8-hour ozone table). Hour i ago weighs w**i. NaN,
    infinite and negative hours are missing; fewer hours than the window count as missing
    older hours. NaN unless at least 2 of the 3 newest hours are valid. The result keeps the
    input's unit and is not truncated (``aqi_us`` truncates).
    """
    specs = _use(tables).nowcast
    if pollutant not in specs:
        raise ValueError(f"nowcast: pollutant must be one of {sorted(specs)}")
    spec = specs[pollutant]
    c = np.asarray(hourly, dtype=np.float64)
    if c.ndim == 0:
        raise ValueError("nowcast: hourly needs a last axis of hours")
    n = spec.hours
    if c.shape[-1] < n:
        pad = np.full((*c.shape[:-1], n - c.shape[-1]), np.nan)
        c = np.concatenate([pad, c], axis=-1)
    c = c[..., -n:]
    valid = np.isfinite(c) & (c >= 0)
    c = np.where(valid, c, 0.0)
    enough = valid[..., -spec.recent_hours :].sum(axis=-1) >= spec.recent_valid
    cmax = np.where(valid, c, -np.inf).max(axis=-1)
    cmin = np.where(valid, c, np.inf).min(axis=-1)
    w = np.ones(cmax.shape)
    np.divide(cmin, cmax, out=w, where=cmax > 0)  # w* = 1 - (max - min) / max; all-zero: 1
    w = np.clip(w, spec.min_weight, 1.0)
    age = np.arange(n - 1, -1, -1, dtype=np.float64)  # hours ago; the newest is 0
    weight = np.where(valid, w[..., None] ** age, 0.0)
    num = (weight * c).sum(axis=-1)
    den = weight.sum(axis=-1)
    out = np.full(den.shape, np.nan)
    # den is 0 only for ozone with w = 0 and the newest hour missing: no defined average.
    np.divide(num, den, out=out, where=enough & (den > 0))
    return out


# --- water quality ------------------------------------------------------------------------------


def do_saturation(
    do_mg_l: npt.ArrayLike, temp_c: npt.ArrayLike, *, tables: IndexTables | None = None
) -> FloatArray:
    """Dissolved oxygen as % of saturation at the water temperature (the WQI's DO input)."""
    spec = _use(tables).do_saturation
    do, t = np.broadcast_arrays(
        np.asarray(do_mg_l, dtype=np.float64), np.asarray(temp_c, dtype=np.float64)
    )
    ok = np.isfinite(do) & (do >= 0) & np.isfinite(t) & (t >= spec.temp_lo) & (t <= spec.temp_hi)
    t = np.where(ok, t, 0.0)
    sat = np.polynomial.polynomial.polyval(t, spec.poly)
    ok &= sat > 0
    out: FloatArray = np.where(ok, 100.0 * do / np.where(ok, sat, 1.0), np.nan)
    return out


def _segment_of(x: FloatArray, upto: FloatArray, closed: BoolArray) -> IntArray:
    seg = np.zeros(x.shape, dtype=np.intp)
    for bound, inclusive in zip(upto[:-1], closed[:-1], strict=True):
        # A closed bound belongs to the segment below it: only values past it move on.
        seg += (x > bound) if inclusive else (x >= bound)
    return seg


def wqi_sub_index(sub: WqiSub, x: npt.ArrayLike, clamp: tuple[float, float]) -> FloatArray:
    """One DOE-WQI sub-index; NaN outside the sub-index's valid input range."""
    v = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(v) & (v >= sub.valid_lo) & (v <= sub.valid_hi)
    v = np.where(ok, v, 0.0)
    seg = _segment_of(v, sub.upto, sub.closed)
    with np.errstate(over="ignore", invalid="ignore"):  # every segment runs on every value
        curves = [
            np.polynomial.polynomial.polyval(v, sub.poly[j])
            + sub.exp[j, 0] * np.exp(sub.exp[j, 1] * v)
            + sub.abs[j, 0] * np.abs(v - sub.abs[j, 1])
            for j in range(len(sub.upto))
        ]
        si = np.choose(seg, curves)
    si = np.clip(si, clamp[0], clamp[1])
    out: FloatArray = np.where(ok, si, np.nan)
    return out


def _class_of(value: FloatArray, lower: FloatArray, inclusive: BoolArray) -> FloatArray:
    nan = np.isnan(value)
    v = np.where(nan, 0.0, value)
    k = np.ones(v.shape)
    for bound, inc in zip(lower, inclusive, strict=True):
        k += (v < bound) if inc else (v <= bound)
    out: FloatArray = np.where(nan, np.nan, k)
    return out


def wqi_my(
    do_sat: npt.ArrayLike,
    bod: npt.ArrayLike,
    cod: npt.ArrayLike,
    an: npt.ArrayLike,
    ss: npt.ArrayLike,
    ph: npt.ArrayLike,
    *,
    tables: IndexTables | None = None,
) -> WqiResult:
    """DOE-WQI from DO (% saturation, see :func:`do_saturation`), BOD, COD, ammoniacal nitrogen,
    suspended solids (mg/l) and pH. The WQI is NaN where any input is invalid; each sub-index is
    held to [0, 100]. Class 1..5 is NWQS class I..V; status 1..3 is clean, slightly polluted,
    polluted.

    The published curves jump *up* where their pieces meet (SIBOD at BOD 5, SICOD at COD 20,
    SIAN at AN 0.3, SISS at SS 100), so the WQI falls with BOD/COD/AN only within each piece.
    """
    table = _use(tables).wqi_my
    inputs = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (do_sat, bod, cod, an, ss, ph))
    )
    sub = {
        name: wqi_sub_index(table.subs[name], x, table.clamp)
        for name, x in zip(_WQI_SUBS, inputs, strict=True)
    }
    value: FloatArray = np.asarray(
        sum(table.subs[name].weight * sub[name] for name in _WQI_SUBS), dtype=np.float64
    )
    return WqiResult(
        table=table.name,
        value=value,
        sub=MappingProxyType(sub),
        wqi_class=wqi_class(value, tables=tables),
        class_labels=table.class_labels,
        status=wqi_status(value, tables=tables),
        status_labels=table.status_labels,
    )


def wqi_class(wqi: npt.ArrayLike, *, tables: IndexTables | None = None) -> FloatArray:
    """NWQS class 1..5 (I..V) of a WQI: I > 92.7, II >= 76.5, III >= 51.9, IV >= 31.0, V."""
    table = _use(tables).wqi_my
    v = np.asarray(wqi, dtype=np.float64)
    return _class_of(v, table.class_lower, table.class_lower_inclusive)


def wqi_status(wqi: npt.ArrayLike, *, tables: IndexTables | None = None) -> FloatArray:
    """Status 1..3 of a WQI: clean >= 81, slightly polluted >= 60, polluted below."""
    table = _use(tables).wqi_my
    v = np.asarray(wqi, dtype=np.float64)
    return _class_of(v, table.status_lower, np.ones(len(table.status_lower), np.bool_))


# --- traffic ------------------------------------------------------------------------------------


def _level(spec: LosTable, measure: FloatArray) -> FloatArray:
    nan = ~np.isfinite(measure)
    m = np.where(nan, 0.0, measure)
    if spec.better == "lower":
        # A holds values up to and including its bound: 11 pc/mi/ln is still A.
        level = np.searchsorted(spec.bounds, m, side="left") + 1
    else:
        # A holds values strictly above its bound: exactly 80 % is B.
        ascending = spec.bounds[::-1]
        level = len(ascending) - np.searchsorted(ascending, m, side="left") + 1
    out: FloatArray = np.where(nan, np.nan, level.astype(np.float64))
    return out


def los_level(
    table: str, measure: npt.ArrayLike, *, tables: IndexTables | None = None
) -> FloatArray:
    """Level 1..6 (A..F) of a service measure already in the table's unit (``LosTable.unit``):
    % of free-flow speed, pc/mi/ln or s/veh. Negative or non-finite measures give NaN."""
    t = _use(tables)
    if table not in t.los:
        raise ValueError(f"los: table must be one of {sorted(t.los)}")
    m = np.asarray(measure, dtype=np.float64)
    return _level(t.los[table], np.where(m >= 0, m, np.nan))


def loop_flow(count: npt.ArrayLike, period_s: npt.ArrayLike) -> FloatArray:
    """Flow (veh/h) from an induction loop's count over ``period_s`` seconds."""
    n, p = np.broadcast_arrays(
        np.asarray(count, dtype=np.float64), np.asarray(period_s, dtype=np.float64)
    )
    ok = np.isfinite(n) & (n >= 0) & np.isfinite(p) & (p > 0)
    out: FloatArray = np.where(ok, n * 3600.0 / np.where(ok, p, 1.0), np.nan)
    return out


def loop_density(
    occupancy: npt.ArrayLike,
    vehicle_length_m: npt.ArrayLike | None = None,
    loop_length_m: npt.ArrayLike | None = None,
    *,
    tables: IndexTables | None = None,
) -> FloatArray:
    """Density (veh/km/lane) from loop occupancy (%): occ/100 * 1000 / (vehicle + loop length).

    Lengths default to the ``[loop]`` values of the tables; pass the site's own where known.
    """
    t = _use(tables)
    occ, lv, ll = np.broadcast_arrays(
        np.asarray(occupancy, dtype=np.float64),
        np.asarray(t.vehicle_length_m if vehicle_length_m is None else vehicle_length_m, float),
        np.asarray(t.loop_length_m if loop_length_m is None else loop_length_m, float),
    )
    length = lv + ll
    ok = np.isfinite(occ) & (occ >= 0) & (occ <= 100) & np.isfinite(length) & (length > 0)
    out: FloatArray = np.where(ok, occ * 10.0 / np.where(ok, length, 1.0), np.nan)
    return out


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    ok = np.isfinite(num) & (num >= 0) & np.isfinite(den) & (den > 0)
    out: FloatArray = np.where(ok, num / np.where(ok, den, 1.0), np.nan)
    return out


def los(
    table: str,
    *,
    speed: npt.ArrayLike | None = None,
    free_flow_speed: npt.ArrayLike | None = None,
    occupancy: npt.ArrayLike | None = None,
    flow: npt.ArrayLike | None = None,
    capacity: npt.ArrayLike | None = None,
    delay: npt.ArrayLike | None = None,
    vehicle_length_m: npt.ArrayLike | None = None,
    loop_length_m: npt.ArrayLike | None = None,
    tables: IndexTables | None = None,
) -> LosResult:
    """HCM level of service, 1..6 for A..F, by the method of ``table``:

    - ``hcm-urban-street`` (HCM 6th ed.; ``hcm2010-urban-street`` for HCM 2010): ``speed`` as %
      of ``free_flow_speed`` (both km/h).
    - ``hcm-freeway``: density from loop ``occupancy`` (%) and vehicle + loop length, or, without
      occupancy, ``flow`` (veh/h/lane) / ``speed`` (km/h); read in pc/mi/ln.
    - ``hcm-signalised``: mean control ``delay`` (s/veh).

    With ``flow`` and ``capacity`` (veh/h, same basis) any method gives F when
    flow / capacity exceeds the table's limit (1.0), as the HCM does.
    """
    t = _use(tables)
    if table not in t.los:
        raise ValueError(f"los: table must be one of {sorted(t.los)}")
    spec = t.los[table]

    def need(name: str, value: npt.ArrayLike | None) -> FloatArray:
        if value is None:
            raise ValueError(f"los {table}: needs {name}")
        return np.asarray(value, dtype=np.float64)

    if spec.measure == "speed_ratio":
        measure = 100.0 * _ratio(need("speed", speed), need("free_flow_speed", free_flow_speed))
    elif spec.measure == "density":
        if occupancy is not None:
            k = loop_density(occupancy, vehicle_length_m, loop_length_m, tables=t)
        else:
            k = _ratio(need("occupancy or flow", flow), need("occupancy or speed", speed))
        measure = k * spec.scale
    elif spec.measure == "control_delay":
        d = need("delay", delay)
        measure = np.where(np.isfinite(d) & (d >= 0), d, np.nan)
    else:
        raise ValueError(f"los {table}: unknown measure {spec.measure!r}")

    value = _level(spec, measure)
    if flow is not None and capacity is not None:
        vc = _ratio(np.asarray(flow, dtype=np.float64), np.asarray(capacity, dtype=np.float64))
        value = np.where(vc > spec.f_above_vc, float(len(spec.labels)), value)
    return LosResult(
        table=spec.name,
        value=np.asarray(value, dtype=np.float64),
        measure=np.asarray(measure, dtype=np.float64),
        unit=spec.unit,
        labels=spec.labels,
    )
