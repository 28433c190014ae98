"""GET /city: the public city status page, server-rendered, in Bahasa Malaysia or English.

No token and no JavaScript needed: the page is whole HTML from the server (a small inline script
only refreshes the figures every minute where scripts run). Every string comes from the
catalogues in api/i18n/; numbers and times are written in the reader's locale and the city's
time zone. The map is inline SVG drawn from the stations' positions: no tile server.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
from functools import cache
from pathlib import Path
from string import Template
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from api import lang as languages
from api import public
from api.errors import ApiError
from api.state import ApiState, get_state
from pusat.settings import Settings

router = APIRouter(tags=["public"])

# Category colours (background) of each index, by 1-based category. US AQI: the EPA's colours;
# Malaysian API: the DOE's (blue, green, yellow, orange, red); WQI class and LOS: cool to warm.
# Colour is never alone: each swatch also has a pattern and the category's name is written.
COLOURS = {
    "aqi_us": ("#00e400", "#ffff00", "#ff7e00", "#ff0000", "#8f3f97", "#7e0023", "#7e0023"),
    "api_my": ("#0066ff", "#00b050", "#ffd700", "#ff8c00", "#e00000"),
    "wqi_class": ("#0066ff", "#00b050", "#ffd700", "#ff8c00", "#e00000"),
    "los": ("#00b050", "#7fd13b", "#ffd700", "#ffb000", "#ff6a00", "#e00000"),
}
NO_DATA = "#bdbdbd"

# Refreshes the figures in place once a minute; without scripts the page is the same, static.
SCRIPT = (
    "(function(){var m=document.getElementById('now');if(!m||!window.fetch)return;"
    "document.getElementById('live').hidden=false;"
    "var u=location.pathname+'?part=now&lang='+encodeURIComponent(m.dataset.lang);"
    "setInterval(function(){fetch(u).then(function(r){return r.ok?r.text():null})"
    ".then(function(t){if(t!==null)m.innerHTML=t}).catch(function(){})},60000)})();"
)
SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; script-src 'sha256-{SCRIPT_HASH}'; style-src 'unsafe-inline';"
    " img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none';"
    " frame-ancestors 'none'"
)


@cache
def template() -> Template:
    return Template((Path(__file__).resolve().parent / "city.html").read_text("utf-8"))


def _luminance(colour: str) -> float:
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def ink(colour: str) -> str:
    """Black or white, whichever reads better on ``colour`` (WCAG contrast ratio)."""
    lum = _luminance(colour)
    return "#000000" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "#ffffff"


def e(text: object) -> str:
    return html.escape(str(text), quote=True)


# -- pieces --------------------------------------------------------------------------------


def _swatch(quantity: str, cat: int) -> str:
    colour = COLOURS[quantity][cat - 1]
    return f'<span class="sw p{cat}" style="background-color:{colour}" aria-hidden="true"></span>'


def _as_of(r: languages.Reader, f: public.Figure) -> str:
    when = f'<time datetime="{e(r.iso(f.ts))}">{e(r.time(f.ts))}</time>'
    text = e(r.t("district.as_of", time="\x00")).replace("\x00", when)
    return f'<span class="note">{text}</span>'


def _notes(r: languages.Reader, d: public.District, domain: str, figs: list[public.Figure]) -> str:
    out = []
    stations = d.in_domain(domain)
    quiet = d.quiet(domain)
    if figs and all(f.stale for f in figs):
        newest = max(f.ts for f in figs)
        out.append(f'<p class="warn">{e(r.t("district.stale", time=r.time(newest)))}</p>')
    elif stations and quiet:
        text = r.t("district.some_stale", stale=quiet, total=len(stations))
        out.append(f'<p class="note">{e(text)}</p>')
    offline = sum(1 for s in stations if s.offline)
    if offline:
        text = r.t("district.offline", count=offline, total=len(stations))
        out.append(f'<p class="warn">{e(text)}</p>')
    return "".join(out)


def _index(r: languages.Reader, f: public.Figure, label_key: str, text_key: str) -> str:
    cat = public.category(f.quantity, f.value) or 1
    name = r.t(f"{f.quantity}.{cat}.name")
    words = r.t(f"{f.quantity}.{cat}.{text_key}")
    value = (
        f'<span class="value">{e(r.number(f.value))}</span> '
        if f.quantity in ("aqi_us", "api_my")
        else ""
    )
    return (
        f'<dt>{e(r.t(label_key))}</dt><dd data-q="{f.quantity}" data-category="{cat}">'
        f"{value}{_swatch(f.quantity, cat)}<strong>{e(name)}</strong> {_as_of(r, f)}"
        f"<br>{e(words)}</dd>"
    )


def _measure(r: languages.Reader, f: public.Figure, label_key: str, unit_key: str, nd: int) -> str:
    value = r.t(unit_key, value=r.number(f.value, nd))
    return (
        f'<dt>{e(r.t(label_key))}</dt><dd data-q="{f.quantity}">'
        f'<span class="value">{e(value)}</span> {_as_of(r, f)}</dd>'
    )


def _hazard(r: languages.Reader, d: public.District, kind: str) -> str:
    h = d.hazard(kind)
    label = e(r.t(f"water.{kind}"))
    if h is None:
        return f'<dt>{label}</dt><dd data-hazard="{kind}">{e(r.t(f"hazard.{kind}_none"))}</dd>'
    text = e(r.t(f"hazard.{kind}_{h.severity}", time=r.time(h.since)))
    return f'<dt>{label}</dt><dd data-hazard="{kind}" class="alarm">{text}</dd>'


def _district(r: languages.Reader, d: public.District, n: int) -> str:
    parts = [
        f'<section class="district" id="d-{n}" aria-labelledby="d-{n}-h"'
        f' data-district="{e(d.name)}">',
        f'<h3 id="d-{n}-h">{e(d.name)}</h3>',
        f'<p class="note">{e(r.plural("district.stations", len(d.stations)))}</p>',
    ]
    f = d.figures
    if d.in_domain("air"):
        items = []
        if "aqi_us" in f:
            items.append(_index(r, f["aqi_us"], "air.aqi_us", "advice"))
        if "api_my" in f:
            items.append(_index(r, f["api_my"], "air.api_my", "advice"))
        if "pm25" in f:
            items.append(_measure(r, f["pm25"], "air.pm25", "unit.ugm3", 1))
        parts.append(f"<h4>{e(r.t('district.air'))}</h4>")
        parts.append(_block(r, d, "air", items, [f[q] for q in public.FIGURES["air"] if q in f]))
    if d.in_domain("water") or d.hazards:
        items = []
        if "water_level" in f:
            items.append(_measure(r, f["water_level"], "water.water_level", "unit.m", 2))
        if "wqi_class" in f:
            items.append(_index(r, f["wqi_class"], "water.wqi_class", "meaning"))
        items += [_hazard(r, d, "flood"), _hazard(r, d, "storm")]
        figs = [f[q] for q in public.FIGURES["water"] if q in f]
        parts.append(f"<h4>{e(r.t('district.water'))}</h4>")
        parts.append(_block(r, d, "water", items, figs, always=True))
    if d.in_domain("traffic"):
        items = []
        if "los" in f:
            items.append(_index(r, f["los"], "traffic.los", "meaning"))
        if "speed" in f:
            items.append(_measure(r, f["speed"], "traffic.speed", "unit.kmh", 0))
        figs = [f[q] for q in public.FIGURES["traffic"] if q in f]
        parts.append(f"<h4>{e(r.t('district.traffic'))}</h4>")
        parts.append(_block(r, d, "traffic", items, figs))
    parts.append("</section>")
    return "".join(parts)


def _block(
    r: languages.Reader,
    d: public.District,
    domain: str,
    items: list[str],
    figs: list[public.Figure],
    always: bool = False,
) -> str:
    has_figures = bool(figs)
    body = f"<dl>{''.join(items)}</dl>" if items and (has_figures or always) else ""
    if not has_figures:
        body = f'<p class="note">{e(r.t("district.no_reading"))}</p>' + body
    return body + _notes(r, d, domain, figs)


def _map(r: languages.Reader, status: public.CityStatus, city: str) -> str:
    places = [(n, d, d.centre()) for n, d in enumerate(status.districts, start=1)]
    placed = [(n, d, c) for n, d, c in places if c is not None]
    heading = f'<h2 id="map-h">{e(r.t("page.map_heading"))}</h2>'
    if not placed:
        return heading + f'<p class="note">{e(r.t("page.map_none"))}</p>'
    lats = [c[0] for _, _, c in placed]
    lons = [c[1] for _, _, c in placed]
    kx = math.cos(math.radians(sum(lats) / len(lats)))  # equal scale in both directions
    span = max((max(lons) - min(lons)) * kx, max(lats) - min(lats), 1e-6)
    width, height, pad = 600.0, 400.0, 50.0
    scale = min((width - 2 * pad), (height - 2 * pad)) / span
    cx = (max(lons) + min(lons)) / 2
    cy = (max(lats) + min(lats)) / 2
    label = e(r.t("page.map_label", city=city))
    out = [
        heading,
        f'<figure><svg class="map" viewBox="0 0 {width:.0f} {height:.0f}" role="group"'
        f' aria-labelledby="map-t"><title id="map-t">{label}</title>',
    ]
    for n, d, (lat, lon) in placed:
        x = width / 2 + (lon - cx) * kx * scale
        y = height / 2 - (lat - cy) * scale
        aqi = d.figures.get("aqi_us")
        cat = public.category("aqi_us", aqi.value) if aqi else None
        fill = COLOURS["aqi_us"][cat - 1] if cat else NO_DATA
        mark = str(cat) if cat else ""
        out.append(
            f'<a href="#d-{n}"><circle cx="{x:.1f}" cy="{y:.1f}" r="18" fill="{fill}"'
            f' stroke="#1a1a1a" stroke-width="1.5"/>'
            f'<text x="{x:.1f}" y="{y + 5:.1f}" text-anchor="middle" fill="{ink(fill)}"'
            f' font-weight="700">{mark}</text>'
            f'<text x="{x:.1f}" y="{y + 36:.1f}" text-anchor="middle" fill="#1a1a1a">'
            f"{e(d.name)}</text></a>"
        )
    out.append(f'</svg><figcaption class="note">{e(r.t("page.map_legend"))}</figcaption></figure>')
    return "".join(out)


def render_now(r: languages.Reader, status: public.CityStatus, settings: Settings) -> str:
    """The part that changes: the map, the districts and the times (also ``?part=now``)."""
    out = [_map(r, status, settings.city_name)]
    out.append(f'<h2 id="districts">{e(r.t("page.districts_heading"))}</h2>')
    if not status.districts:
        out.append(f'<p class="note">{e(r.t("page.none"))}</p>')
    out.append('<div class="grid">')
    out += [_district(r, d, n) for n, d in enumerate(status.districts, start=1)]
    out.append("</div>")
    out.append(f'<p class="note">{e(r.t("page.generated", time=r.time(status.at)))}')
    newest = status.newest()
    if newest is not None:
        out.append(f" {e(r.t('page.newest', time=r.time(newest)))}")
    out.append("</p>")
    return "".join(out)


def render_page(r: languages.Reader, status: public.CityStatus, settings: Settings) -> str:
    city = settings.city_name
    zone = settings.city_timezone
    switch = []
    for code in languages.LANGUAGES:
        name = e(languages.strings(code)["meta.language"])
        current = ' aria-current="true"' if code == r.lang else ""
        switch.append(
            f'<li><a href="?lang={code}" lang="{code}" hreflang="{code}"{current}>{name}</a></li>'
        )
    links = [
        ("/open/v1/districts.json", "page.open_json"),
        ("/open/v1/districts.csv", "page.open_csv"),
        ("/open/v1/districts.geojson", "page.open_geojson"),
        ("/open/v1/catalog", "page.open_catalogue"),
        ("/sta/v1.1", "page.open_sta"),
    ]
    intro = r.t("page.intro", city=city, zone=zone)
    return template().substitute(
        lang=r.lang,
        locale_tag=e(str(r.locale).replace("_", "-")),
        title=e(r.t("page.title", city=city)),
        intro=e(intro),
        intro_html=e(intro),
        skip=e(r.t("page.skip")),
        switch_label=e(r.t("page.switch_label")),
        switch="".join(switch),
        now=render_now(r, status, settings),
        open_heading=e(r.t("page.open_heading")),
        open_text=e(r.t("page.open_text", licence=settings.public_licence)),
        open_links="".join(f'<li><a href="{u}">{e(r.t(k))}</a></li>' for u, k in links),
        sources=e(r.t("page.sources")),
        live=e(r.t("page.live")),
        script=SCRIPT,
    )


def require_public(state: ApiState) -> None:
    if not state.settings.public:
        raise ApiError(404, "the public pages are switched off (PUSAT_PUBLIC=false)")


def reader(state: ApiState, request: Request, lang: str | None) -> languages.Reader:
    try:
        return languages.choose(
            lang, request.headers.get("accept-language"), state.settings.city_timezone
        )
    except languages.UnknownLanguage as exc:
        raise ApiError(
            400, f"lang={exc} is not served; choose one of {', '.join(languages.LANGUAGES)}"
        ) from exc


@router.get(
    "/city",
    response_class=HTMLResponse,
    summary="The public city status page (no token)",
    responses={404: {"description": "PUSAT_PUBLIC=false"}, 400: {"description": "bad lang"}},
)
async def city(
    request: Request,
    state: Annotated[ApiState, Depends(get_state)],
    lang: Annotated[
        str | None, Query(description="ms or en (or a locale of them, en-GB); else Accept-Language")
    ] = None,
    part: Annotated[str | None, Query(pattern="^now$", description="now: only the figures")] = None,
) -> HTMLResponse:
    """Per district: the air (US AQI and the Malaysian API with category, colour and health
    advice), the wetland (water level, DOE-WQI class, flood and storm alarms) and traffic (level
    of service), each with its time and a note when stations are stale or offline."""
    require_public(state)
    r = reader(state, request, lang)
    status = await public.city_status(state)
    body = render_now(r, status, state.settings) if part else render_page(r, status, state.settings)
    headers = {
        "Content-Security-Policy": CSP,
        "Content-Language": r.lang,
        "Vary": "Accept-Language",
    }
    return HTMLResponse(body, headers=headers)
