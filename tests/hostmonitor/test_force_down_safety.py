"""Force-down and the safety scenarios: with [nova] force_down and resurrect on, this host's
own verdict (which is never host_status NORMAL) never asks Nova to force anything down,
whether fencing is configured or not. Real ha-hostmonitor in a network namespace, real
links, the real masakari-api; the routing is read back from the outbox the daemon wrote."""
from __future__ import annotations

import json

import pytest

from tests.helpers import cli, wait_for
from tests.hostmonitor.test_links import STOPPED, start, wait_payloads
from tests.hostmonitor.test_verdicts import RECORDER, no_normal

ACTIONS_ON = {"nova": {"force_down": "true", "resurrect": "true"}}


def drivers_per_row(conf, host):
    out = cli(conf, "outbox", "list", "--json", "--host", host)
    assert out.returncode == 0, out.stderr
    return [(r["notification"]["payload"], sorted(d["driver"] for d in r["deliveries"]))
            for r in json.loads(out.stdout)]


@pytest.mark.slow
@pytest.mark.parametrize("fencing", ["none", "pacemaker"])
def test_this_hosts_verdict_is_never_forced_down(links_up, tmp_path, fencing):
    topo = links_up
    host = topo.new_host()
    sections = {**ACTIONS_ON, "host": {"monitoring_samples": 1, "monitoring_driver": "none"}}
    hm = {}
    if fencing == "pacemaker":
        sections["hostmonitor_peers"] = {
            "stonith_admin_command": f"{RECORDER} {tmp_path / 'fence.jsonl'}"}
        hm = {"fencing": "pacemaker", "fence_timeout": 60}
    d = start(topo, tmp_path, host, sections=sections, **hm)
    try:
        topo.carrier("s0", "down")
        topo.carrier("s1", "down")
        wait_payloads(topo, host, [STOPPED])
        rows = wait_for(lambda: drivers_per_row(d.conf, host), 10, what="outbox rows")
        assert no_normal(topo, host)
        assert all(drivers == ["masakari"] for _, drivers in rows), rows
        # and when the links come back, nothing is "resurrected": Masakari acted on nothing
        topo.carrier("s0", "up")
        topo.carrier("s1", "up")
        wait_for(lambda: len(drivers_per_row(d.conf, host)) >= 2, 15, what="STARTED queued")
        assert all("resurrect" not in drivers and "nova-force-down" not in drivers
                   for _, drivers in drivers_per_row(d.conf, host))
    finally:
        d.stop()
