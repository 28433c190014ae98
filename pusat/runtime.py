"""Where the embedded services of a running `pusat up` are, so other commands can find them."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from pusat.settings import Settings

STATE_FILE = "state.json"


@dataclass(frozen=True)
class State:
    database_url: str | None
    mqtt_url: str | None
    pid: int


def save(home: Path, state: State) -> None:
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(state)), "utf-8")
    tmp.replace(home / STATE_FILE)


def clear(home: Path) -> None:
    (home / STATE_FILE).unlink(missing_ok=True)


def load(home: Path) -> State | None:
    """The state of a `pusat up` that is still running, else None."""
    try:
        raw = json.loads((home / STATE_FILE).read_text("utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    state = State(**raw)
    try:
        os.kill(state.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by someone else
    return state


def resolve(settings: Settings) -> Settings:
    """Fill unset URLs from a running `pusat up` in PUSAT_HOME (explicit settings win)."""
    if settings.database_url and settings.mqtt_url:
        return settings
    state = load(settings.home)
    if state is None:
        return settings
    return settings.with_(
        database_url=settings.database_url or state.database_url,
        mqtt_url=settings.mqtt_url or state.mqtt_url,
    )
