"""The public burst benchmark's quick run, end to end: every phase has operator requests and
ingest lag, every flood its public answers; the rate limit shows in the one-address flood and
nginx's cache in its phases (almost nothing reaches the API, nothing fails); the report names
each phase with the aim met or not."""

from __future__ import annotations

import shutil

import pytest

from bench import public
from pusat.embedded import nginx


@pytest.mark.skipif(
    shutil.which("wrk") is None or nginx.binary() is None,
    reason="no wrk or nginx: `make system-deps` installs Debian's",
)
def test_quick_public_bench_runs_every_phase() -> None:
    config = public.Config(
        sensors=200, gateways=4, phase_s=3.0, rate=200, connections=8, lighthouse=False
    )
    r = public.run(config, lambda _: None)
    phases = r["phases"]
    floods = [p for p in phases if p.flood]
    assert [p.name for p in floods] == list(public.FLOODS)
    assert [p.name for p in phases[::2]] == ["idle"] * (len(floods) + 1)  # around each flood
    for p in phases:
        assert len(p.operator_ms) > 0 and p.operator_errors == 0, p.name
        assert p.lag_ms is not None and p.lag_ms[1] > 0, p.name
        assert "operators' API" in p.cpu_s, p.name
    for p in floods:
        assert p.public_requests and p.public_requests > 0, p.name
        assert p.cpu_s["wrk"] > 0, p.name
    limited, cached = floods[0], floods[1]
    assert limited.non_2xx and limited.non_2xx > limited.public_requests // 2  # 429s
    # The API answered every request wrk counted (and those wrk left unfinished at its end).
    assert cached.non_2xx == 0 and cached.reached_api is not None
    unfinished = cached.reached_api - (cached.public_requests or 0)
    assert 0 <= unfinished <= config.connections
    for p in floods[2:4]:  # a second process answers the public
        assert p.non_2xx == 0 and p.reached_api == 0 and p.cpu_s["second API"] > 0, p.name
    for p in floods[4:]:  # nginx's cache: a request or two per cache period reach the API
        assert p.non_2xx == 0 and p.reached_api is not None and p.reached_api <= 5, p.name
        assert p.cpu_s["nginx"] > 0 and "second API" not in p.cpu_s, p.name
    text = public.markdown(r, "test")
    assert "{" not in text  # every placeholder filled in
    assert all(f"| {name} |" in text for name in public.FLOODS)
    assert text.count(" met |") == len(floods)
