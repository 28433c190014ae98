"""Two publishers of one gateway: the one that ends must not make the other look dead.

`pusat simulate city` beside `pusat up` publishes for the same 21 gateways as the live city;
each run says `online`/`offline` (and leaves its last will) as an owner of its own, and a gateway
stays online while any owner's last word is `online`. Real Mosquitto, real ingest, real PostgreSQL.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from ingest.meta import Status, parse_status
from ingest.records import Rejection
from pusat.settings import Settings
from simulators import city
from tests.conftest import RunningWorker
from tests.helpers import Publisher, rows, scalar, wait_for
from tests.test_sim_cli import needs_sim, pusat

CITY_GATEWAYS = 21


def status_of(url: str, gateway: str) -> str | None:
    found = rows(url, "SELECT status FROM gateways WHERE gateway_id = %s", (gateway,))
    return str(found[0][0]) if found else None


def barrier(publisher: Publisher, url: str, root: str, name: str) -> None:
    """Wait until ingest has stored every status published before this one: the broker hands
    one subscription's messages on in order, and ingest commits its batches in order."""
    publisher.publish(f"{root}/{name}/status", "online", retain=False)
    wait_for(lambda: status_of(url, name) == "online", what=f"the barrier {name}")


@needs_sim
def test_a_second_simulator_leaves_the_live_city_online(
    worker: RunningWorker, publisher: Publisher, settings: Settings, tmp_path: Path
) -> None:
    url = settings.database_url
    assert url
    city_gateways = "SELECT count(*) FROM gateways WHERE gateway_id LIKE 'gw-%%' AND status = %s"
    stop = threading.Event()
    live = threading.Thread(target=city.run, args=(settings, stop), kwargs={"speed": 1.0})
    live.start()
    try:
        wait_for(
            lambda: scalar(url, city_gateways, ("online",)) == CITY_GATEWAYS,
            timeout=30,
            what="the live city's gateways online",
        )
        # A second, fast run of the same city that ends while the live one goes on.
        out = pusat(["simulate", "city", "--speed", "max", "--duration", "5m"], settings, tmp_path)
        assert out.returncode == 0, out.stderr
        barrier(publisher, url, settings.topic_root, "barrier-1")
        assert scalar(url, city_gateways, ("offline",)) == 0, rows(
            url, "SELECT gateway_id, status FROM gateways ORDER BY 1"
        )
        assert scalar(url, city_gateways, ("online",)) == CITY_GATEWAYS
        assert live.is_alive()
    finally:
        stop.set()
        live.join(30)
    assert not live.is_alive()
    # The live city's own clean stop still takes its gateways offline.
    wait_for(
        lambda: scalar(url, city_gateways, ("offline",)) == CITY_GATEWAYS,
        what="every gateway offline once the live city stops too",
    )


def test_a_lost_owner_goes_offline_by_its_will_alone(
    worker: RunningWorker, publisher: Publisher, settings: Settings
) -> None:
    """Owners by hand, as two gateways' firmware would say it: the will of one ends only its
    own claim; plain `online`/`offline` (no owner) is the gateway speaking for itself."""
    url = settings.database_url
    assert url
    topic = f"{settings.topic_root}/gw-x/status"
    publisher.publish(topic, json.dumps({"status": "online", "owner": "a"}), retain=True)
    publisher.publish(topic, json.dumps({"status": "online", "owner": "b"}), retain=True)
    publisher.publish(topic, json.dumps({"status": "offline", "owner": "b"}), retain=True)
    barrier(publisher, url, settings.topic_root, "barrier-2")
    assert status_of(url, "gw-x") == "online"
    publisher.publish(topic, "online", retain=True)  # the gateway itself
    publisher.publish(topic, json.dumps({"status": "offline", "owner": "a"}), retain=True)
    barrier(publisher, url, settings.topic_root, "barrier-3")
    assert status_of(url, "gw-x") == "online"
    publisher.publish(topic, "offline", retain=True)
    wait_for(lambda: status_of(url, "gw-x") == "offline", what="the last owner's offline")
    publisher.publish(topic, b"", retain=True)  # clear the retained message


def test_parse_status_names_the_owner() -> None:
    assert parse_status(b"online") == Status("online", "")
    assert parse_status(b' {"status": "OFFLINE", "owner": "sim-1a2b3c"}') == Status(
        "offline", "sim-1a2b3c"
    )
    for bad in (b'{"status": "online", "owner": 7}', b'{"status": "up"}', b"maybe"):
        assert isinstance(parse_status(bad), Rejection), bad
