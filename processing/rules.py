"""Alert rules as data: the catalogue's defaults, overridden by a rules file (PUSAT_RULES).

A rule's identity is (quantity, kind, severity, scope). A rules-file rule with the same identity
replaces the default; `enabled = false` switches one off; for a given series the most specific
rule of each (quantity, kind, severity) applies: sensor, then district, then domain, then global.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

KINDS = ("threshold", "rate", "flatline", "stale", "index")
SEVERITIES = ("info", "warning", "critical")
SCOPES = ("sensor", "district", "domain")

# Index categories: the value past which a derived index is "at or worse than" the category.
INDEX_CATEGORIES: dict[str, dict[str, float]] = {
    "aqi_us": {
        "moderate": 50,
        "usg": 100,
        "unhealthy": 150,
        "very_unhealthy": 200,
        "hazardous": 300,
    },
    "api_my": {"moderate": 50, "unhealthy": 100, "very_unhealthy": 200, "hazardous": 300},
    "wqi_class": {"II": 1, "III": 2, "IV": 3, "V": 4},
    "los": {"B": 1, "C": 2, "D": 3, "E": 4, "F": 5},
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_US = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}


class RuleError(ValueError):
    """A rules file that cannot be used, with the rule and field named."""


def duration_us(text: object, field: str) -> int:
    if isinstance(text, int | float) and not isinstance(text, bool):
        return int(float(text) * 1_000_000)  # a bare number is seconds
    m = _DURATION.match(text) if isinstance(text, str) else None
    if m is None:
        raise RuleError(f"{field}: {text!r} is not a duration like '90s', '2m', '1h'")
    return int(float(m.group(1)) * _UNIT_US[m.group(2)])


@dataclass(frozen=True)
class Rule:
    quantity: str | None  # None: the whole sensor (stale rules)
    kind: str
    severity: str
    above: float | None = None
    below: float | None = None
    clear: float | None = None
    for_us: int = 0
    per_us: int = 1_000_000  # rate rules: the change is per this long
    max_gap_us: int = 0  # rate and flatline: readings further apart are not compared (0: any)
    tolerance: float = 0.0  # flatline
    factor: float = 5.0  # stale: silence longer than factor x expected period
    flap_count: int = 6
    flap_window_us: int = 30 * 60_000_000
    scope_kind: str | None = None  # sensor | district | domain
    scope_value: str | None = None
    message: str = ""
    enabled: bool = True
    escalate_after_us: int = 0  # still active (unacknowledged) this long: escalated (0: never)

    @property
    def slot(self) -> str:
        """The kind, with the direction for rules that have one (pH low and pH high differ)."""
        if self.kind in ("threshold", "rate"):
            return f"{self.kind}-{'above' if self.above is not None else 'below'}"
        return self.kind

    @property
    def identity(self) -> tuple[str | None, str, str, str | None, str | None]:
        return (self.quantity, self.slot, self.severity, self.scope_kind, self.scope_value)

    @property
    def key(self) -> str:
        """A stable name, stored with alerts and the engine's saved state."""
        scope = f"@{self.scope_kind}={self.scope_value}" if self.scope_kind else ""
        return f"{self.quantity or 'sensor'}:{self.slot}:{self.severity}{scope}"

    @property
    def specificity(self) -> int:
        return 0 if self.scope_kind is None else 3 - SCOPES.index(self.scope_kind)


def _number(raw: dict[str, Any], field: str, where: str) -> float | None:
    v = raw.get(field)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise RuleError(f"{where}: {field} must be a finite number")
    return float(v)


def parse_rule(raw: dict[str, Any], defaults: dict[str, Any], where: str) -> Rule:
    known = {
        "quantity",
        "kind",
        "severity",
        "above",
        "below",
        "clear",
        "for",
        "per",
        "max_gap",
        "tolerance",
        "factor",
        "flap_count",
        "flap_window",
        "category",
        "message",
        "enabled",
        "escalate_after",
        *SCOPES,
    }
    unknown = set(raw) - known
    if unknown:
        raise RuleError(f"{where}: unknown field(s) {sorted(unknown)}")
    kind = raw.get("kind", "threshold")
    if kind not in KINDS:
        raise RuleError(f"{where}: kind must be one of {KINDS}, not {kind!r}")
    severity = raw.get("severity", "warning")
    if severity not in SEVERITIES:
        raise RuleError(f"{where}: severity must be one of {SEVERITIES}, not {severity!r}")
    quantity = raw.get("quantity")
    if quantity is not None and not isinstance(quantity, str):
        raise RuleError(f"{where}: quantity must be a string")
    if quantity is None and kind != "stale":
        raise RuleError(f"{where}: a {kind} rule needs a quantity")
    if quantity is not None and kind == "stale":
        raise RuleError(f"{where}: stale rules watch a whole sensor: omit quantity")
    scopes = [s for s in SCOPES if s in raw]
    if len(scopes) > 1:
        raise RuleError(f"{where}: give at most one of sensor, district, domain")
    above, below = _number(raw, "above", where), _number(raw, "below", where)
    if kind == "index":
        table = INDEX_CATEGORIES.get(quantity or "")
        category = raw.get("category")
        if table is None or category not in table:
            raise RuleError(f"{where}: index rules take a category of {sorted(INDEX_CATEGORIES)}")
        above, below = table[category], None
    if kind in ("threshold", "rate", "index") and (above is None) == (below is None):
        raise RuleError(f"{where}: a {kind} rule needs exactly one of above, below")
    clear = _number(raw, "clear", where)
    if clear is not None and above is not None and clear > above:
        raise RuleError(f"{where}: clear ({clear}) must not be above `above` ({above})")
    if clear is not None and below is not None and clear < below:
        raise RuleError(f"{where}: clear ({clear}) must not be below `below` ({below})")
    flap_count = raw.get("flap_count", defaults.get("flap_count", 6))
    if not isinstance(flap_count, int) or flap_count < 2:
        raise RuleError(f"{where}: flap_count must be an integer of at least 2")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleError(f"{where}: enabled must be true or false")
    return Rule(
        quantity=quantity,
        kind=kind,
        severity=severity,
        above=above,
        below=below,
        clear=clear,
        for_us=duration_us(raw.get("for", 0), f"{where}: for"),
        per_us=duration_us(raw.get("per", "1s"), f"{where}: per"),
        max_gap_us=duration_us(raw.get("max_gap", 0), f"{where}: max_gap"),
        tolerance=_number(raw, "tolerance", where) or 0.0,
        factor=_number(raw, "factor", where) or float(defaults.get("stale_factor", 5)),
        flap_count=flap_count,
        flap_window_us=duration_us(
            raw.get("flap_window", defaults.get("flap_window", "30m")), f"{where}: flap_window"
        ),
        scope_kind=scopes[0] if scopes else None,
        scope_value=str(raw[scopes[0]]) if scopes else None,
        message=str(raw.get("message", "")),
        enabled=enabled,
        escalate_after_us=duration_us(
            raw.get("escalate_after", defaults.get("escalate_after", 0)),
            f"{where}: escalate_after",
        ),
    )


def parse(text: str, origin: str) -> tuple[dict[str, Any], list[Rule]]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RuleError(f"{origin}: not valid TOML: {e}") from e
    defaults = doc.get("defaults", {})
    raw_rules = doc.get("rule", [])
    if not isinstance(raw_rules, list):
        raise RuleError(f"{origin}: rules are written as [[rule]] tables")
    rules = [parse_rule(r, defaults, f"{origin} rule {i + 1}") for i, r in enumerate(raw_rules)]
    return defaults, rules


def escalations(rules: list[Rule]) -> dict[str, float]:
    """Seconds after which an unacknowledged alarm of each rule is escalated (rules that say)."""
    return {r.key: r.escalate_after_us / 1e6 for r in rules if r.escalate_after_us > 0}


def load(path: Path | None) -> list[Rule]:
    """The effective rule set: defaults (with a stale rule per sensor), then the file's rules."""
    text = resources.files("processing").joinpath("default_rules.toml").read_text("utf-8")
    defaults, rules = parse(text, "default_rules.toml")
    rules.append(
        Rule(
            quantity=None,
            kind="stale",
            severity="warning",
            factor=float(defaults.get("stale_factor", 5)),
            message="sensor silent",
        )
    )
    if path is not None:
        try:
            own = path.read_text("utf-8")
        except OSError as e:
            raise RuleError(f"PUSAT_RULES: cannot read {path}: {e}") from e
        file_defaults, extra = parse(own, str(path))
        if "stale_factor" in file_defaults:  # a file's [defaults] also tunes the implicit rule
            rules[-1] = replace(rules[-1], factor=float(file_defaults["stale_factor"]))
        by_identity = {r.identity: r for r in rules}
        for r in extra:
            by_identity[r.identity] = r
        rules = list(by_identity.values())
    return [r for r in rules if r.enabled]


@dataclass(frozen=True)
class SeriesInfo:
    sensor: str
    quantity: str
    district: str | None
    domain: str | None


def _in_scope(rule: Rule, s: SeriesInfo) -> bool:
    if rule.scope_kind is None:
        return True
    have = {"sensor": s.sensor, "district": s.district, "domain": s.domain}[rule.scope_kind]
    return have == rule.scope_value


def stale_rule(rules: list[Rule], s: SeriesInfo) -> int | None:
    """Index of the stale rule watching a sensor (the most specific one), if any."""
    found = [
        (r.specificity, i)
        for i, r in enumerate(rules)
        if r.kind == "stale" and r.quantity is None and _in_scope(r, s)
    ]
    return max(found)[1] if found else None


def applicable(rules: list[Rule], s: SeriesInfo) -> list[int]:
    """Indices of the rules that apply to a series: the most specific per (kind, severity)."""
    best: dict[tuple[str, str], tuple[int, int]] = {}
    for i, r in enumerate(rules):
        if r.kind == "stale" or r.quantity != s.quantity or not _in_scope(r, s):
            continue
        slot = (r.slot, r.severity)
        if slot not in best or r.specificity > best[slot][0]:
            best[slot] = (r.specificity, i)
    return sorted(i for _, i in best.values())
