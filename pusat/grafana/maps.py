"""The wall map's offline base layer: district outlines as GeoJSON, served by Grafana itself.

A control room may have no internet, and Grafana's default base maps are online tile servers.
The geomap panel's base layer is therefore a GeoJSON file mounted into Grafana's
``public/maps`` folder (see docker-compose.yml). This one outlines the simulated city's
districts (`simulators.city`); a city replaces it with its own boundaries, keeping a ``name``
property per feature.
"""

from __future__ import annotations

from typing import Any


def districts_geojson() -> dict[str, Any]:
    # Imported here: only the build needs the simulated city's layout.
    from simulators import city

    features = []
    for d in city.districts():
        half_x, half_y = city.CELL_X / 2, city.CELL_Y / 2
        corners = [
            (d.x - half_x, d.y - half_y),
            (d.x + half_x, d.y - half_y),
            (d.x + half_x, d.y + half_y),
            (d.x - half_x, d.y + half_y),
            (d.x - half_x, d.y - half_y),
        ]
        ring = [[lon, lat] for lat, lon in (city.to_latlon(x, y) for x, y in corners)]
        features.append(
            {
                "type": "Feature",
                "properties": {"name": d.name},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    return {"type": "FeatureCollection", "features": features}
