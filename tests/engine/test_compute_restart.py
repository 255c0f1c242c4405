"""A nova-compute restart handled by ha-processmonitor is not a host failure: through the
real masakari-engine, no compute service is disabled and nothing is evacuated.

Real ha-processmonitor and ha-hostmonitor on one node (shared outbox), real stand-in
processes killed with SIGKILL, the real API + engine, the recording Nova. hostmonitor runs
with NO damping (monitoring_samples 1, hold_down 0: the settings that turned a restart into
an evacuation, issue 11): the compute column alone must keep it quiet, because it follows
processmonitor's verdict instead of a process scan.
"""
from __future__ import annotations

import pytest

from tests.engine.node import settle
from tests.helpers import wait_for

UNDAMPED = {"hold_down": 0}
HOST_UNDAMPED = {"monitoring_samples": 1}


def restarted(node, old, timeout):
    return wait_for(lambda: [p for p in node.pids("nova-compute") if p not in old], timeout,
                    interval=0.2, what="nova-compute running again")


@pytest.mark.parametrize("fails,delay", [(0, 0.0), (0, 8.0), (2, 0.0)],
                         ids=["fast", "slow-8s", "fails-twice-then-succeeds"])
def test_restart_handled_by_processmonitor_is_no_host_failure(
        engine, nova, node, record, fails, delay):
    n = node()
    for s in ("nova-compute", "libvirtd"):
        n.start_service(s)
    servers = [nova.add_server(n.hostname) for _ in range(2)]
    n.processmonitor(fails=fails, delay=delay, retries=3, interval=1)
    hm = n.hostmonitor(host=HOST_UNDAMPED, **UNDAMPED)
    settle(1.5)  # a few observations with everything running
    old = n.kill("nova-compute")
    restarted(n, old, 30)
    settle(3)  # hostmonitor evaluates every 0.5 s; the engine acts within ~2 s
    rows = record(engine, n.hostname, note=f"nova-compute SIGKILL, restart fails {fails}x, "
                                           f"takes {delay}s")
    assert rows[0]["notifications"] == []  # processmonitor succeeded: nothing to tell
    assert nova.mutations(n.hostname) == []
    assert nova.service(n.hostname)["status"] == "enabled"
    assert {nova.server(s)["OS-EXT-SRV-ATTR:host"] for s in servers} == {n.hostname}
    assert "report_host_failure" not in hm.log_text()


def test_restart_that_never_succeeds_disables_the_service_only(engine, nova, node, record):
    """processmonitor gives up (PROCESS STOPPED): the engine disables the compute service
    (what Masakari does for a process failure) — and nothing is evacuated: hostmonitor has
    no fencing configured, so its verdict goes out as UNKNOWN and is ignored."""
    n = node()
    for s in ("nova-compute", "libvirtd"):
        n.start_service(s)
    server = nova.add_server(n.hostname)
    n.processmonitor(fails=99, retries=1, interval=1)
    hm = n.hostmonitor(host=HOST_UNDAMPED, **UNDAMPED)
    n.kill("nova-compute")
    rows = wait_for(lambda: [r for r in engine.api.notifications(hostname=n.hostname)
                             if r["type"] == "PROCESS"], 40, interval=0.3,
                    what="PROCESS STOPPED stored")
    done = engine.wait_final(rows[0]["notification_uuid"])
    assert done["status"] == "finished"
    assert done["payload"] == {"event": "STOPPED", "process_name": "nova-compute"}
    wait_for(lambda: "report_host_failure" in hm.log_text(), 20, what="hostmonitor verdict")
    settle(3)
    rec = record(engine, n.hostname, note="nova-compute restart fails for good")[0]
    assert nova.service(n.hostname)["status"] == "disabled"
    assert nova.service(n.hostname)["disabled_reason"] == "Masakari detected process failed."
    assert nova.evacuations() == [] or all(c.host != n.hostname for c in nova.evacuations())
    assert nova.server(server)["OS-EXT-SRV-ATTR:host"] == n.hostname
    # this host's own verdict is never NORMAL
    assert not any(t == "COMPUTE_HOST" and p.get("host_status") == "NORMAL"
                   for t, p, _ in rec["notifications"])
    assert [c.action or c.body.get("status") for c in nova.mutations(n.hostname)] == ["disabled"]
    # the host is on maintenance now: hostmonitor's verdict (UNKNOWN) is held, not dropped
    held = n.history("--type", "COMPUTE_HOST")
    assert "report_host_failure" in held and "maintenance" in held, held


def test_process_failure_cleared_during_an_api_outage_is_withdrawn(engine, nova, node, record):
    """processmonitor gives up while the API is down, then nova-compute runs again before
    the API is back: the queued PROCESS STOPPED is withdrawn (superseded) instead of making
    the engine disable a compute service that works, and the history says why."""
    n = node()
    for s in ("nova-compute", "libvirtd"):
        n.start_service(s)
    pm = n.processmonitor(fails=99, retries=0, interval=1)
    engine.api.kill()
    try:
        n.kill("nova-compute")
        wait_for(lambda: "STOPPED" in n.outbox(), 30, interval=0.3, what="PROCESS STOPPED queued")
        n.start_service("nova-compute")  # the operator (or systemd) brought it back
        wait_for(lambda: "STARTED" in n.outbox(), 30, interval=0.3, what="PROCESS STARTED queued")
    finally:
        engine.api.start()
    settle(4)  # the backlog is looked at again once the API answers
    rec = record(engine, n.hostname, note="PROCESS STOPPED then STARTED queued during outage")
    assert rec[0]["notifications"] == []
    assert nova.mutations(n.hostname) == []
    assert nova.service(n.hostname)["status"] == "enabled"
    history = n.history("--type", "PROCESS")
    assert "superseded" in history
    assert pm.proc.poll() is None
