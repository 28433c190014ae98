"""How fast the whole city simulates: simulated seconds per wall second, hour by hour.

    python -m simulators.speed [--hours 24] [--start 2026-11-27T00:00:00+08:00] [--seed 1]

Runs the city (SUMO, the air model, SWMM, faults none) as fast as it goes, publishing nowhere
(the messages are built and kept, as they would be handed to the broker), and prints one line
per simulated hour and the total. The speed follows the traffic: SUMO's step time grows with the
vehicles on the streets, so rush hours are the slowest.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from datetime import datetime

from pusat.settings import Settings
from simulators.publisher import ListSink
from simulators.runner import Options, Progress, Simulation
from simulators.scenario import LOCAL


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--start", default="2026-11-27T00:00:00+08:00")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    start = datetime.fromisoformat(args.start).timestamp()
    marks: list[tuple[float, float, int]] = []  # (simulated time, wall time, vehicles)

    def progress(p: Progress) -> None:
        marks.append((p.sim_time, time.monotonic(), p.vehicles))

    sim = Simulation(
        Settings(),
        Options(
            what="city", speed=math.inf, start=start, duration=args.hours * 3600, seed=args.seed
        ),
        ListSink(),
    )
    began = time.monotonic()
    result = sim.run(threading.Event(), progress, progress_every_s=0.0)
    print("local hour  simulated s per s  vehicles on the streets (end of hour)")
    prev = (start, began + result.build_s)
    for sim_t, wall, vehicles in marks:
        if (sim_t - start) % 3600 == 0 and sim_t > prev[0]:
            hour = datetime.fromtimestamp(sim_t - 3600, LOCAL).strftime("%H:%M")
            print(f"{hour:>10}  {(sim_t - prev[0]) / (wall - prev[1]):17,.0f}  {vehicles:8,}")
            prev = (sim_t, wall)
    print(
        f"total: {result.end - result.start:,.0f} simulated s in {result.wall_s:.1f} s"
        f" ({result.sim_speed:,.0f} simulated s per s; start-up {result.build_s:.2f} s),"
        f" {result.messages:,} messages, {result.readings:,} readings"
    )


if __name__ == "__main__":
    main()
