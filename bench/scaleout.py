"""Ingest scale-out on one machine: one worker against two, as partitions (``--partition K/2``)
and as a shared-subscription group (``--group``), in one run.

    python -m bench.scaleout [--trials 2] [--json 100000] [--packs 5000]

Each trial gets a fresh database and topic root; the broker queues every message for each
worker's persistent session before the workers start (as the ingest benchmark's pre-loaded
phases, whose services and helpers it uses), so the figure is readings per second from the first
reading received to the last committed. Gateways: 20, which the CRC-32 rule splits 12 / 8 over
two partitions. The modes alternate within each trial so that all see the same machine noise.
Prints a line per trial and the medians; nothing is written.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import uuid
from collections.abc import Callable

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench import ingest as bi

GATEWAYS = 20
MODES = ("one worker", "2 partitions", "2 in a group")


def messages(form: str, root: str, n: int, t0: float) -> list[tuple[str, bytes]]:
    """The ingest benchmark's streams, spread over ``GATEWAYS`` gateways."""
    if form == "json":
        return [
            (
                f"{root}/gw-{i % GATEWAYS}/json",
                orjson.dumps(
                    {
                        "sensor": f"K-{i % bi.SENSORS}",
                        "ts": t0 + i * bi.JSON_SPACING_S,
                        "values": {"flow": bi.flow(i * 1e-3)},
                    }
                ),
            )
            for i in range(n)
        ]
    return [
        (
            f"{root}/gw-{i % GATEWAYS}/senml",
            bi.senml_pack(
                f"S-{i % bi.SENSORS}", t0 + i * bi.PACK_SPACING_S, bi.RECORD_SPACING_S, i * 0.1
            ),
        )
        for i in range(n)
    ]


def publish(svc: bi.Services, msgs: list[tuple[str, bytes]]) -> None:
    """QoS 1, in windows of 500 acknowledged messages (untimed: the workers are not running)."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-scaleout-pub-{uuid.uuid4().hex[:6]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    connected = threading.Event()
    c.on_connect = lambda *args: connected.set()
    c.connect(svc.host, svc.port)
    c.loop_start()
    try:
        if not connected.wait(10):
            raise bi.BenchError("publisher: not connected within 10 s")
        for start in range(0, len(msgs), 500):
            infos = [c.publish(t, p, qos=1) for t, p in msgs[start : start + 500]]
            for info in infos:
                info.wait_for_publish(120)
    finally:
        c.disconnect()
        c.loop_stop()


def trial(svc: bi.Services, form: str, n: int, mode: str) -> float:
    root, cid = bi._ids(f"scaleout-{form}")
    url = svc.database(f"scaleout_{uuid.uuid4().hex[:10]}")
    workers = 1 if mode == MODES[0] else 2
    ids = [f"{cid}-{k}" for k in range(1, workers + 1)]
    grouped = mode == MODES[2]
    for client_id in ids:
        if grouped:  # as `pusat ingest --group g` subscribes
            filters = [f"$share/g/{root}/+/+", f"{root}/+/meta", f"{root}/+/status"]
        else:
            filters = [f"{root}/+/+"]
        bi.presubscribe(svc, client_id, filters)
    spacing = bi.JSON_SPACING_S if form == "json" else bi.PACK_SPACING_S
    publish(svc, messages(form, root, n, bi.stream_start(n, spacing)))
    children = []
    for k, client_id in enumerate(ids, 1):
        scale: dict[str, str] = {}
        if workers > 1:
            scale = {"PUSAT_GROUP": "g"} if grouped else {"PUSAT_PARTITION": f"{k}/{workers}"}
        children.append(svc.worker(url, root, client_id, **scale))
    readings = n * (bi.PACK_SIZE if form == "senml" else 1)
    bi.await_rows(url, readings, bi._consume_timeout(readings, 1000), f"{mode} ({form})")
    for child in children:
        if child.terminate() != 0:
            raise bi.BenchError(f"a worker exited with {child.proc.returncode}")
    first, done = bi.stored_span(url)
    return readings / (done - first)


def run(
    trials: int, json_messages: int, packs: int, log: Callable[[str], None] = print
) -> dict[tuple[str, str], list[float]]:
    """Readings per second of every (stream, mode), a value per trial; every trial checks that
    all its readings were stored once."""
    rates: dict[tuple[str, str], list[float]] = {}
    with bi.services(log) as svc:
        for t in range(trials):
            for form, n in (("json", json_messages), ("senml", packs)):
                for mode in MODES:
                    r = trial(svc, form, n, mode)
                    rates.setdefault((form, mode), []).append(r)
                    log(f"trial {t + 1}: {form:5} {mode:12} {r:>10,.0f} readings/s")
    return rates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--json", type=int, default=100_000, help="one-reading messages per trial")
    ap.add_argument("--packs", type=int, default=5_000, help="SenML packs of 100 per trial")
    args = ap.parse_args(argv)
    rates = run(args.trials, args.json, args.packs, lambda line: print(line, flush=True))
    for (form, mode), v in rates.items():
        base = statistics.median(rates[(form, MODES[0])])
        m = statistics.median(v)
        trials = " / ".join(f"{x / 1000:.1f}k" for x in v)
        print(f"{form:5} {mode:12} median {m:>10,.0f} readings/s ({m / base:.2f}x; {trials})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
