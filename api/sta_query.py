"""SensorThings API query options: parsing $filter, $orderby, $expand, $select, $top, $skip and
$count (OGC 18-088, section 9.3), evaluating a filter on an entity, and turning a filter on
Observations into SQL.

A filter is parsed into a small tree of tuples:
    ("lit", value)            a string, number, bool, null or a datetime literal
    ("path", ("a", "b"))      a property path such as properties/district or Thing/name
    ("op", name, left, right) eq ne gt ge lt le and or add sub mul div mod
    ("not", operand)
    ("call", name, args)      substringof, startswith, endswith, contains, tolower, toupper,
                              length, indexof, trim, concat, year, month, day, hour, minute,
                              geo.distance, geo.intersects, st_within, st_contains,
                              st_intersects (with geography'POINT(..)' or 'POLYGON((..))')
Anything else is a QueryError, which the API answers with a 400 and the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Node = tuple[Any, ...]
DEFAULT_TOP = 100
MAX_TOP = 10_000

_COMPARE = ("eq", "ne", "gt", "ge", "lt", "le")
_ARITH = ("add", "sub", "mul", "div", "mod")
_DATETIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})"
_TOKEN = re.compile(
    rf"\s*(?:(?P<geo>geography'[^']*')|(?P<dt>{_DATETIME})|(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
    r"|(?P<name>[A-Za-z_@$][\w@.$]*(?:/[A-Za-z_@$][\w@.$]*)*)|(?P<punct>[(),]))"
)


class QueryError(ValueError):
    """A query option that cannot be answered (400)."""


def parse_datetime(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise QueryError(f"not a date and time: {text!r}") from e


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise QueryError(f"$filter: cannot read {text[pos : pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        value = m.group(kind or "")
        if kind == "geo":
            out.append(("lit", parse_wkt(value[len("geography'") : -1])))
        elif kind == "dt":
            out.append(("lit", parse_datetime(value)))
        elif kind == "str":
            out.append(("lit", value[1:-1].replace("''", "'")))
        elif kind == "num":
            out.append(("lit", float(value) if any(c in value for c in ".eE") else int(value)))
        elif kind == "name":
            out.append(("name", value))
        else:
            out.append(("punct", value))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, Any]:
        tok = self.peek()
        if tok is None:
            raise QueryError("$filter ends too early")
        self.i += 1
        return tok

    def word(self, *words: str) -> str | None:
        tok = self.peek()
        if tok is not None and tok[0] == "name" and tok[1].lower() in words:
            self.i += 1
            return str(tok[1]).lower()
        return None

    def expect(self, punct: str) -> None:
        tok = self.take()
        if tok != ("punct", punct):
            raise QueryError(f"$filter: expected {punct!r}, found {tok[1]!r}")

    def parse(self) -> Node:
        node = self.or_()
        if self.peek() is not None:
            raise QueryError(f"$filter: unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.word("or"):
            node = ("op", "or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.word("and"):
            node = ("op", "and", node, self.not_())
        return node

    def not_(self) -> Node:
        if self.word("not"):
            return ("not", self.not_())
        return self.compare()

    def compare(self) -> Node:
        node = self.additive()
        op = self.word(*_COMPARE)
        if op:
            node = ("op", op, node, self.additive())
        return node

    def additive(self) -> Node:
        node = self.multiplicative()
        while op := self.word("add", "sub"):
            node = ("op", op, node, self.multiplicative())
        return node

    def multiplicative(self) -> Node:
        node = self.primary()
        while op := self.word("mul", "div", "mod"):
            node = ("op", op, node, self.primary())
        return node

    def primary(self) -> Node:
        kind, value = self.take()
        if (kind, value) == ("punct", "("):
            node = self.or_()
            self.expect(")")
            return node
        if kind == "lit":
            return ("lit", value)
        if kind == "name":
            low = value.lower()
            if low in ("null", "true", "false"):
                return ("lit", {"null": None, "true": True, "false": False}[low])
            if self.peek() == ("punct", "("):
                self.take()
                args: list[Node] = []
                if self.peek() != ("punct", ")"):
                    args.append(self.or_())
                    while self.peek() == ("punct", ","):
                        self.take()
                        args.append(self.or_())
                self.expect(")")
                if low not in _FUNCTIONS:
                    raise QueryError(f"$filter: the function {value}() is not supported")
                return ("call", low, tuple(args))
            return ("path", tuple(value.split("/")))
        raise QueryError(f"$filter: unexpected {value!r}")


def parse_filter(text: str) -> Node:
    return _Parser(text).parse()


# -- geometry: points and polygons in lon/lat degrees, planar (the OData functions) ------------

Point = tuple[float, float]


@dataclass(frozen=True)
class Geometry:
    kind: str  # Point | Polygon
    points: tuple[Point, ...]  # a Point has one; a Polygon its outer ring


def parse_wkt(text: str) -> Geometry:
    """``POINT(lon lat)`` or ``POLYGON((lon lat, ...))`` (the outer ring only)."""
    m = re.fullmatch(r"\s*(POINT|POLYGON)\s*\(\s*\(?(.*?)\)?\s*\)\s*", text, re.I)
    if m is None:
        raise QueryError(f"geography'{text}': only POINT and POLYGON are served")
    try:
        pts = tuple(
            (float(x), float(y)) for x, y in (pair.split() for pair in m.group(2).split(","))
        )
    except ValueError as e:
        raise QueryError(f"geography'{text}': cannot read its coordinates") from e
    kind = m.group(1).capitalize()
    if (kind == "Point" and len(pts) != 1) or (kind == "Polygon" and len(pts) < 3):
        raise QueryError(f"geography'{text}': too few or too many coordinates")
    return Geometry(kind, pts)


def _geometry(v: Any) -> Geometry | None:
    if isinstance(v, Geometry):
        return v
    if isinstance(v, dict) and v.get("type") == "Point":
        x, y = v["coordinates"][:2]
        return Geometry("Point", ((float(x), float(y)),))
    if isinstance(v, dict) and v.get("type") == "Polygon":
        return Geometry("Polygon", tuple((float(x), float(y)) for x, y, *_ in v["coordinates"][0]))
    return None


def _inside(p: Point, ring: tuple[Point, ...]) -> bool:
    x, y = p
    inside = False
    for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1], strict=True):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def _within(a: Any, b: Any) -> bool | None:
    ga, gb = _geometry(a), _geometry(b)
    if ga is None or gb is None or ga.kind != "Point" or gb.kind != "Polygon":
        return None if ga is None or gb is None else False
    return _inside(ga.points[0], gb.points)


def _intersects(a: Any, b: Any) -> bool | None:
    ga, gb = _geometry(a), _geometry(b)
    if ga is None or gb is None:
        return None
    if ga.kind == gb.kind == "Point":
        return ga.points == gb.points
    if ga.kind == "Polygon" and gb.kind == "Polygon":
        return any(_inside(p, gb.points) for p in ga.points) or any(
            _inside(p, ga.points) for p in gb.points
        )
    point, poly = (ga, gb) if ga.kind == "Point" else (gb, ga)
    return _inside(point.points[0], poly.points)


def _distance(a: Any, b: Any) -> float | None:
    ga, gb = _geometry(a), _geometry(b)
    if ga is None or gb is None or ga.kind != "Point" or gb.kind != "Point":
        return None
    (x1, y1), (x2, y2) = ga.points[0], gb.points[0]
    return float(((x1 - x2) ** 2 + (y1 - y2) ** 2) ** 0.5)


# -- evaluation on an entity ------------------------------------------------------------------


def _coerce(a: Any, b: Any) -> tuple[Any, Any]:
    if isinstance(a, datetime) and isinstance(b, str):
        return a, parse_datetime(b)
    if isinstance(b, datetime) and isinstance(a, str):
        return parse_datetime(a), b
    return a, b


def _compare(op: str, a: Any, b: Any) -> bool:
    a, b = _coerce(a, b)
    if op == "eq":
        return bool(a == b)
    if op == "ne":
        return bool(a != b)
    if a is None or b is None:
        return False
    try:
        return bool({"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b}[op])
    except TypeError:
        return False


def _arith(op: str, a: Any, b: Any) -> Any:
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return None
    if op in ("div", "mod") and b == 0:
        return None
    return {"add": a + b, "sub": a - b, "mul": a * b, "div": a / b, "mod": a % b}[op]


def _text(v: Any) -> str:
    return "" if v is None else str(v)


_FUNCTIONS: dict[str, Any] = {
    "substringof": lambda a, b: _text(a) in _text(b),
    "contains": lambda a, b: _text(b) in _text(a),
    "startswith": lambda a, b: _text(a).startswith(_text(b)),
    "endswith": lambda a, b: _text(a).endswith(_text(b)),
    "tolower": lambda a: _text(a).lower(),
    "toupper": lambda a: _text(a).upper(),
    "length": lambda a: len(_text(a)),
    "indexof": lambda a, b: _text(a).find(_text(b)),
    "trim": lambda a: _text(a).strip(),
    "concat": lambda a, b: _text(a) + _text(b),
    "year": lambda a: a.year if isinstance(a, datetime) else None,
    "month": lambda a: a.month if isinstance(a, datetime) else None,
    "day": lambda a: a.day if isinstance(a, datetime) else None,
    "hour": lambda a: a.hour if isinstance(a, datetime) else None,
    "minute": lambda a: a.minute if isinstance(a, datetime) else None,
    "geo.distance": _distance,
    "geo.intersects": _intersects,
    "st_within": _within,
    "st_contains": lambda a, b: _within(b, a),
    "st_intersects": _intersects,
}


def evaluate(node: Node, get: Any) -> Any:
    """The value of ``node`` for one entity; ``get(path)`` reads a property path of it."""
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "path":
        return get(node[1])
    if kind == "not":
        return not evaluate(node[1], get)
    if kind == "call":
        args = [evaluate(a, get) for a in node[2]]
        try:
            return _FUNCTIONS[node[1]](*args)
        except TypeError as e:
            raise QueryError(f"$filter: {node[1]}() takes other arguments") from e
    op, left, right = node[1], node[2], node[3]
    if op == "and":
        return bool(evaluate(left, get)) and bool(evaluate(right, get))
    if op == "or":
        return bool(evaluate(left, get)) or bool(evaluate(right, get))
    a, b = evaluate(left, get), evaluate(right, get)
    if op in _COMPARE:
        return _compare(op, a, b)
    return _arith(op, a, b)


# -- the same filter as SQL, for Observations ------------------------------------------------

_SQL_OPS = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_SQL_ARITH = {"add": "+", "sub": "-", "mul": "*", "div": "/", "mod": "%"}


def to_sql(node: Node, columns: dict[tuple[str, ...], str], params: list[Any]) -> str:
    """``node`` as a SQL condition over ``columns`` (property path -> column); literals go to
    ``params``. Paths or functions without a column are a QueryError."""
    kind = node[0]
    if kind == "lit":
        if node[1] is None:
            return "NULL"
        params.append(node[1])
        return "%s"
    if kind == "path":
        column = columns.get(tuple(node[1]))
        if column is None:
            raise QueryError(
                f"$filter on Observations: {'/'.join(node[1])} is not supported here; use"
                f" {', '.join(sorted('/'.join(k) for k in columns))}"
            )
        return column
    if kind == "not":
        return f"NOT ({to_sql(node[1], columns, params)})"
    if kind == "call":
        raise QueryError(f"$filter on Observations: {node[1]}() is not supported")
    op, left, right = node[1], node[2], node[3]
    if op in ("and", "or"):
        return f"({to_sql(left, columns, params)} {op.upper()} {to_sql(right, columns, params)})"
    a, b = to_sql(left, columns, params), to_sql(right, columns, params)
    if op in _SQL_OPS:
        if b == "NULL" or a == "NULL":
            other = a if b == "NULL" else b
            return f"({other} IS {'NOT ' if op == 'ne' else ''}NULL)"
        return f"({a} {_SQL_OPS[op]} {b})"
    return f"({a} {_SQL_ARITH[op]} {b})"


# -- the other options ----------------------------------------------------------------------


@dataclass
class Expand:
    path: tuple[str, ...]
    options: Options


@dataclass
class Options:
    filter: Node | None = None
    orderby: list[tuple[tuple[str, ...], bool]] = field(default_factory=list)  # (path, desc)
    top: int | None = None
    skip: int = 0
    select: list[str] | None = None
    expand: list[Expand] = field(default_factory=list)
    count: bool = False


def _split(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside parentheses and quotes."""
    out, depth, quoted, start = [], 0, False, 0
    for i, c in enumerate(text):
        if c == "'":
            quoted = not quoted
        elif not quoted and c == "(":
            depth += 1
        elif not quoted and c == ")":
            depth -= 1
        elif not quoted and depth == 0 and c == sep:
            out.append(text[start:i])
            start = i + 1
    if depth or quoted:
        raise QueryError(f"unbalanced parentheses or quotes in {text!r}")
    out.append(text[start:])
    return [p.strip() for p in out if p.strip()]


def _int(name: str, text: str) -> int:
    try:
        n = int(text)
    except ValueError as e:
        raise QueryError(f"{name} must be a whole number, not {text!r}") from e
    if n < 0:
        raise QueryError(f"{name} must not be negative")
    return n


def parse_options(raw: dict[str, str]) -> Options:
    """Options from the query parameters (or a nested $expand's ``;``-separated list)."""
    known = {"$filter", "$orderby", "$top", "$skip", "$select", "$expand", "$count", "$format"}
    unknown = [k for k in raw if k.startswith("$") and k not in known]
    if unknown:
        raise QueryError(f"unknown query option {unknown[0]}")
    o = Options()
    if raw.get("$filter"):
        o.filter = parse_filter(raw["$filter"])
    for item in _split(raw.get("$orderby", ""), ","):
        words = item.split()
        if len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise QueryError(f"$orderby: cannot read {item!r}")
        desc = len(words) == 2 and words[1].lower() == "desc"
        o.orderby.append((tuple(words[0].split("/")), desc))
    if "$top" in raw:
        o.top = min(_int("$top", raw["$top"]), MAX_TOP)
    if "$skip" in raw:
        o.skip = _int("$skip", raw["$skip"])
    if raw.get("$select"):
        o.select = [s.strip() for s in raw["$select"].split(",") if s.strip()]
    if "$count" in raw:
        if raw["$count"].lower() not in ("true", "false"):
            raise QueryError("$count must be true or false")
        o.count = raw["$count"].lower() == "true"
    if raw.get("$format", "json").lower() != "json":
        raise QueryError("$format: only json is served")
    for item in _split(raw.get("$expand", ""), ","):
        path, _, rest = item.partition("(")
        nested: dict[str, str] = {}
        if rest:
            if not rest.endswith(")"):
                raise QueryError(f"$expand: cannot read {item!r}")
            for part in _split(rest[:-1], ";"):
                key, eq, value = part.partition("=")
                if not eq:
                    raise QueryError(f"$expand: cannot read {part!r}")
                nested[key.strip()] = value.strip()
        o.expand.append(Expand(tuple(path.strip().split("/")), parse_options(nested)))
    return o
