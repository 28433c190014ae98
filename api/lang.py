"""The public page's languages: string catalogues (api/i18n/<lang>.toml), choosing a language
from ``?lang=`` or ``Accept-Language``, and numbers and times in the reader's locale (Babel's
CLDR data) and the city's time zone."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_skeleton, format_time
from babel.numbers import format_decimal

LANGUAGES = ("ms", "en")  # the first is the city's own, the default
DEFAULT = "ms"
FOLDER = Path(__file__).resolve().parent / "i18n"


class UnknownLanguage(ValueError):
    """A ``lang`` parameter that names no catalogue."""


def _flatten(prefix: str, table: dict[str, Any], out: dict[str, str]) -> None:
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            _flatten(key + ".", v, out)
        else:
            out[key] = str(v)


@cache
def strings(lang: str) -> dict[str, str]:
    """The catalogue of ``lang`` as flat dotted keys (``aqi_us.3.name``), read once."""
    if lang not in LANGUAGES:
        raise UnknownLanguage(lang)
    out: dict[str, str] = {}
    _flatten("", tomllib.loads((FOLDER / f"{lang}.toml").read_text("utf-8")), out)
    return out


@dataclass(frozen=True)
class Reader:
    """Who reads the page: the catalogue's language and the locale numbers and times use."""

    lang: str
    locale: Locale
    zone: ZoneInfo

    def t(self, key: str, **values: object) -> str:
        text = strings(self.lang)[key]
        return text.format(**values) if values else text

    def plural(self, key: str, count: int) -> str:
        """``key.one`` or ``key.other`` (CLDR plural rules of the language), with ``count``."""
        form = self.locale.plural_form(count)
        table = strings(self.lang)
        text = table.get(f"{key}.{form}", table[f"{key}.other"])
        return text.format(count=self.number(count))

    def number(self, value: float, decimals: int = 0) -> str:
        pattern = "#,##0" + ("." + "0" * decimals if decimals else "")
        return format_decimal(value, format=pattern, locale=self.locale)

    def time(self, at: datetime) -> str:
        """Day, month, year, hour and minute in the city's zone, as the locale writes them."""
        day = format_skeleton("yMMMd", at, tzinfo=self.zone, locale=self.locale)
        clock = format_time(at, "short", tzinfo=self.zone, locale=self.locale)
        joined: str = self.locale.datetime_formats["medium"]  # "{1}, {0}": date, then time
        return joined.replace("{1}", day).replace("{0}", clock)

    def iso(self, at: datetime) -> str:
        return at.astimezone(self.zone).isoformat(timespec="seconds")


def _locale(tag: str, lang: str) -> Locale:
    """The reader's own locale when Babel knows it and it is of ``lang`` (en-GB), else the
    catalogue's (en_MY, ms_MY)."""
    try:
        found = Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        found = None
    if found is not None and found.language == lang and found.territory:
        return found
    return Locale.parse(strings(lang)["meta.locale"])


def _preferences(header: str) -> list[str]:
    """Language tags of an Accept-Language header, best first (RFC 9110 quality values)."""
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        if tag.strip() and q > 0:
            ranked.append((-q, i, tag.strip()))
    return [t for _, _, t in sorted(ranked)]


def choose(lang: str | None, accept_language: str | None, zone: str) -> Reader:
    """``?lang=`` first (``ms``, ``en``, or a locale of theirs such as ``en-GB``), then the
    first supported language of Accept-Language, then Bahasa Malaysia."""
    tz = ZoneInfo(zone)
    if lang:
        primary = lang.split("-")[0].split("_")[0].lower()
        if primary not in LANGUAGES:
            raise UnknownLanguage(lang)
        return Reader(primary, _locale(lang, primary), tz)
    for tag in _preferences(accept_language or ""):
        primary = tag.split("-")[0].lower()
        if primary in LANGUAGES:
            return Reader(primary, _locale(tag, primary), tz)
    return Reader(DEFAULT, _locale("", DEFAULT), tz)
