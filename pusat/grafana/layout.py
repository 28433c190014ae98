"""Where panels go on Grafana's 24-column dashboard grid.

The SDK's own placement moves to a new row only after a panel has already run past column 24,
and leaves the space beside a tall panel empty. Here each panel, in order, takes the first
place (top to bottom, then left to right) where it fits whole beside those already placed:
what Grafana's gravity would do, and never off the grid or on top of another panel.
"""

from __future__ import annotations

COLUMNS = 24


def check_size(w: int, h: int) -> None:
    if not 1 <= w <= COLUMNS or h < 1:
        raise ValueError(f"a panel {w} wide and {h} high does not fit a {COLUMNS}-column grid")


def place(sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(x, y) for each (w, h), in order."""
    taken: list[tuple[int, int, int, int]] = []

    def free(x: int, y: int, w: int, h: int) -> bool:
        return all(
            x >= ox + ow or ox >= x + w or y >= oy + oh or oy >= y + h for ox, oy, ow, oh in taken
        )

    out: list[tuple[int, int]] = []
    for w, h in sizes:
        check_size(w, h)
        y = 0
        while True:
            x = next((x for x in range(COLUMNS - w + 1) if free(x, y, w, h)), None)
            if x is not None:
                break
            y += 1
        taken.append((x, y, w, h))
        out.append((x, y))
    return out
