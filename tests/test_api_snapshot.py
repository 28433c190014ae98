"""Shared snapshots: one build for many clients, never older than the rule says, failures seen.

The clock is a number the test moves; builds are real coroutines that finish when the test lets
them (an asyncio.Event), so nothing here waits on time.
"""

from __future__ import annotations

import asyncio

import pytest

from api.snapshot import Key, Snapshots


class City:
    """A build whose answer is the current value, finishing when ``release`` is set."""

    def __init__(self) -> None:
        self.value = 1
        self.now = 0.0
        self.release = asyncio.Event()
        self.release.set()
        self.builds: list[Key] = []
        self.fail = False
        self.took = 0.5  # of the clock, every build

    async def build(self) -> tuple[bytes, str, dict[str, str]]:
        seen = self.value
        await self.release.wait()
        self.now += self.took
        if self.fail:
            raise RuntimeError("database away")
        return str(seen).encode(), "text/plain", {"X-Value": str(seen)}

    def snapshots(self, max_age_s: float) -> Snapshots:
        return Snapshots(max_age_s, self.builds.append, clock=lambda: self.now)


KEY: Key = ("latest", "json")


def test_many_clients_share_one_build() -> None:
    async def run() -> None:
        city = City()
        snaps = city.snapshots(1.0)
        city.release.clear()
        waiting = [asyncio.ensure_future(snaps.get(KEY, city.build)) for _ in range(50)]
        await asyncio.sleep(0)  # let them all ask
        city.release.set()
        got = await asyncio.gather(*waiting)
        assert {s.body for s in got} == {b"1"} and len(city.builds) == 1
        assert (await snaps.get(("latest", "csv"), city.build)).body == b"1"
        assert len(city.builds) == 2  # another shape, another snapshot

    asyncio.run(run())


def test_fresh_then_stale_while_rebuilding_then_waits() -> None:
    async def run() -> None:
        city = City()
        snaps = city.snapshots(1.0)
        first = await snaps.get(KEY, city.build)  # made at 0.0, took 0.5: clock 0.5
        city.value = 2
        city.now = 1.5  # age 1.5: still fresh (max(1.0, 3 x 0.5))
        assert (await snaps.get(KEY, city.build)) is first and len(city.builds) == 1
        city.now = 2.0  # age 2.0 <= 1.5 + 2 x 0.5: served stale, a rebuild starts
        city.release.clear()
        assert (await snaps.get(KEY, city.build)) is first and len(city.builds) == 2
        city.release.set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        new = await snaps.get(KEY, city.build)
        assert new.body == b"2" and len(city.builds) == 2  # the rebuild's, not a third
        city.value = 3
        city.now = new.made + 10  # long idle: far too old to serve, the request waits
        assert (await snaps.get(KEY, city.build)).body == b"3"

    asyncio.run(run())


def test_a_slow_build_is_rebuilt_at_most_a_third_of_the_time() -> None:
    async def run() -> None:
        city = City()
        city.took = 2.0
        snaps = city.snapshots(1.0)
        first = await snaps.get(KEY, city.build)  # made at 0.0, took 2.0
        city.value = 2
        city.now = 5.9  # older than max_age_s, younger than 3 x 2.0: no rebuild
        assert (await snaps.get(KEY, city.build)) is first and len(city.builds) == 1
        city.now = 6.1
        assert (await snaps.get(KEY, city.build)) is first and len(city.builds) == 2  # stale
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert (await snaps.get(KEY, city.build)).body == b"2"

    asyncio.run(run())


def test_a_failed_build_reaches_those_who_wait_and_the_next_one_retries() -> None:
    async def run() -> None:
        city = City()
        snaps = city.snapshots(1.0)
        city.fail = True
        with pytest.raises(RuntimeError, match="database away"):
            await snaps.get(KEY, city.build)
        city.fail = False
        assert (await snaps.get(KEY, city.build)).body == b"1"
        assert len(city.builds) == 2

    asyncio.run(run())


def test_zero_max_age_still_shares_a_running_build() -> None:
    async def run() -> None:
        city = City()
        snaps = city.snapshots(0.0)
        await snaps.get(KEY, city.build)
        city.value = 2
        city.now += 5.0  # older than 0 + 2 x 0.5: waits for a new build
        assert (await snaps.get(KEY, city.build)).body == b"2"

    asyncio.run(run())


def test_old_shapes_are_forgotten() -> None:
    async def run() -> None:
        city = City()
        snaps = Snapshots(1.0, city.builds.append, max_entries=2, clock=lambda: city.now)
        for shape in ("a", "b", "c"):
            await snaps.get(("latest", shape), city.build)
        await snaps.get(("latest", "a"), city.build)  # "a" was dropped: built again
        assert [k[1] for k in city.builds] == ["a", "b", "c", "a"]

    asyncio.run(run())
