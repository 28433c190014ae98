"""The quantity catalogue: name, domain, canonical unit, accepted units, valid range, period.

Quantities are data (``quantities.toml``), never classes. Decoders look units up here and
validation reads the ranges as arrays, so a new quantity is a data change.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

UNKNOWN = -1  # quantity index of a quantity the catalogue does not know


@dataclass(frozen=True)
class Quantity:
    name: str
    domain: str
    unit: str
    min: float
    max: float
    period: float
    units: dict[str, tuple[float, float]]


@dataclass(frozen=True)
class Catalogue:
    quantities: tuple[Quantity, ...]
    index: dict[str, int] = field(repr=False)
    # Columnar views for vectorised validation, indexed by quantity index.
    min: npt.NDArray[np.float64] = field(repr=False)
    max: npt.NDArray[np.float64] = field(repr=False)
    period: npt.NDArray[np.float64] = field(repr=False)

    def get(self, name: str) -> Quantity | None:
        i = self.index.get(name)
        return None if i is None else self.quantities[i]

    def conversion(self, name: str, unit: str | None) -> tuple[float, float] | None:
        """(scale, offset) turning ``unit`` into the canonical unit; None when not accepted.

        ``unit`` None means the value is already canonical (the native JSON form).
        """
        q = self.get(name)
        if q is None:
            return None
        if unit is None or unit == q.unit:
            return (1.0, 0.0)
        return q.units.get(unit)


def _quantity(name: str, raw: dict[str, Any]) -> Quantity:
    units = {str(u): (float(s), float(o)) for u, (s, o) in raw["units"].items()}
    units.setdefault(raw["unit"], (1.0, 0.0))
    return Quantity(
        name=name,
        domain=str(raw["domain"]),
        unit=str(raw["unit"]),
        min=float(raw["min"]),
        max=float(raw["max"]),
        period=float(raw["period"]),
        units=units,
    )


def from_mapping(data: dict[str, Any]) -> Catalogue:
    qs = tuple(_quantity(n, r) for n, r in data["quantity"].items())
    return Catalogue(
        quantities=qs,
        index={q.name: i for i, q in enumerate(qs)},
        min=np.array([q.min for q in qs], dtype=np.float64),
        max=np.array([q.max for q in qs], dtype=np.float64),
        period=np.array([q.period for q in qs], dtype=np.float64),
    )


def load(path: Path | None = None) -> Catalogue:
    """The catalogue shipped with Pusat, or one read from ``path``."""
    if path is None:
        text = resources.files("processing").joinpath("quantities.toml").read_text("utf-8")
    else:
        text = path.read_text("utf-8")
    return from_mapping(tomllib.loads(text))
