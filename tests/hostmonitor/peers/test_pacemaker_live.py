"""Peer failures on a live 3-node corosync + Pacemaker 2.1.5 cluster that really fences
(tests/fixtures/pacemaker_cluster.py): one ha-hostmonitor per node, run on that node
(its network and mount namespaces), delivering over the management network to a real
masakari-api; every result is read back from the API.

The API here is this module's own instance with masakari's duplicate detection window
lowered to 1 s (default 180 s): these tests count reports, and a duplicate must be
*stored* (and so seen) rather than answered 409 — and one host fails three times within a
minute here, which the default window would also answer 409.

The cluster is formed once for the module (~6 s with the seeded CIB); corosync token 1000 ms.
"""
from __future__ import annotations

import pwd
import time

import pytest

from tests.helpers import BIN, wait_for
from tests.hostmonitor.peers.live import (STARTED, STONITH_WAIT, STOPPED_NORMAL,
                                          STOPPED_UNKNOWN, live_cluster, using)
from tests.hostmonitor.peers.live import reset as _reset
from tests.hostmonitor.peers.live import victim as _victim

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with live_cluster(tmp_path_factory.mktemp("api-pcmk"), "pcmk-live") as env:
        yield env


@pytest.fixture
def poll(live):
    yield from using(live)


def test_killed_node_one_normal_report_per_failure_three_times_and_started(poll):
    live, c = poll, poll.cluster
    victim = _victim(live)
    took_all = []
    for failure in range(1, 4):
        t0 = time.monotonic()
        c.kill(victim)
        want = [STOPPED_NORMAL, STARTED] * (failure - 1) + [STOPPED_NORMAL]
        wait_for(lambda: len(live.stored(victim)) == len(want), 40,
                 what=f"failure {failure}: STOPPED stored")
        took = time.monotonic() - t0
        live.settle()
        assert live.stored(victim) == want, f"failure {failure}"
        assert f"reboot {victim}" in c.fence_log() or f"off {victim}" in c.fence_log()
        c.restart(victim)
        live.start_daemon(victim)
        wait_for(lambda: len(live.stored(victim)) == len(want) + 1, 30,
                 what=f"failure {failure}: STARTED stored")
        live.settle()
        assert live.stored(victim) == want + [STARTED]
        took_all.append(took)
    # one node queued each report: the DC (no 409 needed to hide the others)
    queued = live.queued(victim)
    assert sum(queued.values()) == 6, queued
    assert all(live.stored(n) == [] for n in c.nodes if n != victim)
    print(f"kill → STOPPED/NORMAL stored: {', '.join(f'{t:.1f}s' for t in took_all)}")


def test_dc_killed_new_dc_reports_once(poll):
    live, c = poll, poll.cluster
    dc = c.dc()
    c.kill(dc)
    wait_for(lambda: live.stored(dc), 40, what="STOPPED of the old DC")
    live.settle()
    assert live.stored(dc) == [STOPPED_NORMAL]
    survivors = [n for n in c.nodes if n != dc]
    new_dc = c.dc(survivors[0])
    assert new_dc in survivors
    queued = live.queued(dc)
    assert queued[new_dc] == 1 and sum(queued.values()) == 1, queued


def test_failed_fencing_is_unknown_then_normal_when_a_later_attempt_succeeds(poll):
    live, c = poll, poll.cluster
    victim = _victim(live)
    c.fail_fencing(True)
    c.kill(victim)
    t0 = time.monotonic()
    wait_for(lambda: live.stored(victim), STONITH_WAIT + 30, what="UNKNOWN stored")
    assert time.monotonic() - t0 >= STONITH_WAIT - 1, "UNKNOWN only after stonith_wait"
    live.settle()
    assert live.stored(victim) == [STOPPED_UNKNOWN]
    assert "refused" in c.fence_log()
    c.fail_fencing(False)  # Pacemaker retries the fencing; the next attempt succeeds
    wait_for(lambda: len(live.stored(victim)) == 2, 60, what="NORMAL after fencing")
    live.settle()
    assert live.stored(victim) == [STOPPED_UNKNOWN, STOPPED_NORMAL]


def test_partition_minority_reports_nobody_majority_waits_for_fencing(poll):
    """LP#1878548 (masakari-monitors: both sides of a split report each other): the node
    cut off alone has no quorum and reports nobody, for as long as it lives; the majority
    reports it only as UNKNOWN while fencing fails, NORMAL once fenced."""
    live, c = poll, poll.cluster
    alone = _victim(live)
    majority = [n for n in c.nodes if n != alone]
    c.fail_fencing(True)  # the cut-off node stays alive: both partitions run on
    c.partition([alone])
    wait_for(lambda: live.stored(alone), STONITH_WAIT + 30, what="UNKNOWN of the cut-off node")
    assert c.stack_running(alone)
    # The cut-off node's own view: alone, without quorum (its membership change may land
    # a moment after the majority's report under load).
    wait_for(lambda: not c.view(alone)["quorum"], 30, what=f"{alone} to see no quorum")
    live.settle()
    assert live.stored(alone) == [STOPPED_UNKNOWN]
    assert all(live.stored(n) == [] for n in majority)
    rows = live._rows()
    assert all(rows.get((alone, n), 0) == live.base_rows.get((alone, n), 0)
               for n in c.nodes), "the cut-off node queued nothing about anybody"
    assert "no quorum" in live.daemons[alone].log_text()
    c.fail_fencing(False)
    wait_for(lambda: len(live.stored(alone)) == 2, 60, what="NORMAL once fenced")
    assert live.stored(alone) == [STOPPED_UNKNOWN, STOPPED_NORMAL]
    assert all(live.stored(n) == [] for n in majority)


ALERT = "masakari"


@pytest.fixture
def alerts(live):
    """Daemons that only deliver (monitoring_driver none) and the alert agent installed in
    the CIB as docs/hostmonitor-peers.md says, run by Pacemaker as hacluster."""
    live.use("none")
    live.begin()
    # Every node runs the alert. In a real cluster the recipient (the configuration file) is
    # the same path on each node; here each node's file lives in its own state directory,
    # so a one-line wrapper names it by the node's name.
    wrapper = live.workdir / f"ha-pacemaker-alert-run{live.run}"
    wrapper.write_text("#!/bin/sh\n"
                       f"exec {BIN / 'ha-pacemaker-alert'} --config-file "
                       f"{live.workdir}/run{live.run}/$(uname -n)/hm.conf \"$@\"\n")
    wrapper.chmod(0o755)
    live.cluster.configure_alert(live.cluster.nodes[0], str(wrapper), "monitors.conf",
                                 alert_id=ALERT)
    yield live
    # Heal while the alert is still installed: in this mode the alert agent is the only
    # reporter, so a node fenced again after the test gets its STARTED only through it.
    try:
        _reset(live)
    finally:
        live.cluster.remove_alert(live.cluster.nodes[0], ALERT)
    live.stop_daemons()
    live.driver = None


def test_alert_agent_as_hacluster_reports_once_started_then_unknown_and_normal(alerts):
    live, c = alerts, alerts.cluster
    victim = _victim(live)
    t0 = time.monotonic()
    c.kill(victim)
    wait_for(lambda: live.stored(victim), 40, what="STOPPED from the alert agent")
    took = time.monotonic() - t0
    live.settle()
    assert live.stored(victim) == [STOPPED_NORMAL]
    queued = live.queued(victim)
    assert sum(queued.values()) == 1, queued
    # Pacemaker ran it as hacluster: the row was queued by hacluster in the shared outbox
    reporter = next(n for n, q in queued.items() if q)
    state = live.confs[reporter].parent
    owners = {p.name: p.stat().st_uid for p in (state / "pacemaker-alert").iterdir()}
    assert pwd.getpwnam("hacluster").pw_uid in owners.values(), owners
    for n in c.nodes:
        text = c.pacemaker_log(n).read_text(errors="replace") if n != victim else ""
        assert "Traceback" not in text
    c.restart(victim)
    live.start_daemon(victim)
    wait_for(lambda: len(live.stored(victim)) == 2, 30, what="STARTED from the alert agent")
    live.settle()
    assert live.stored(victim) == [STOPPED_NORMAL, STARTED]
    print(f"kill → STOPPED/NORMAL stored via the alert agent: {took:.1f}s")
    # second failure, fencing fails: the waiter's UNKNOWN after stonith_wait, then the
    # fencing alert of the attempt that succeeds gives NORMAL
    c.fail_fencing(True)
    t0 = time.monotonic()
    c.kill(victim)
    wait_for(lambda: len(live.stored(victim)) == 3, STONITH_WAIT + 30, what="UNKNOWN")
    assert time.monotonic() - t0 >= STONITH_WAIT, "UNKNOWN only after stonith_wait"
    assert live.stored(victim)[2] == STOPPED_UNKNOWN
    c.fail_fencing(False)
    wait_for(lambda: len(live.stored(victim)) == 4, 60, what="NORMAL after the fencing")
    live.settle()
    assert live.stored(victim) == [STOPPED_NORMAL, STARTED, STOPPED_UNKNOWN, STOPPED_NORMAL]
    assert sum(live.queued(victim).values()) == 4
