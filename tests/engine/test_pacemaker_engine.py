"""A node of the live 3-node Pacemaker cluster killed, fenced for real, reported by its peers'
ha-hostmonitor (the poll driver), evacuated by the real masakari-engine; back in service
(resurrect); killed again within masakari-api's 180 s duplicate window and evacuated again.

The composition is tests/fixtures/pacemaker_engine.py: the cluster of
tests/fixtures/pacemaker_cluster.py (real corosync + Pacemaker, a lab fence agent that cuts
the node's "power"), the session's masakari-api + masakari-engine over RabbitMQ
(tests/fixtures/masakari_engine.py, its duplicate window at masakari's default, 180 s) and
the recording Nova stand-in (tests/fixtures/keystone_nova.py; the real Nova: test_real_nova.py), with
``[nova] force_down`` and ``[nova] resurrect`` on. What was sent is counted in the
reporters' outboxes (a 409 cannot hide a second POST there), what the engine did in the
API's notification statuses and the stand-in's recorded calls.
"""
from __future__ import annotations

import time

import pytest

from monitors.notification import parse_time
from tests.fixtures.pacemaker_engine import GRACE, PacemakerEngine
from tests.helpers import wait_for

pytestmark = pytest.mark.slow

STOPPED_NORMAL = {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "NORMAL"}
STARTED = {"event": "STARTED", "cluster_status": "ONLINE", "host_status": "NORMAL"}
# the second failure, in the other form of cluster_status (monitors/recipient.py distinct)
STOPPED_NORMAL_2 = {"event": "STOPPED", "host_status": "NORMAL"}


@pytest.fixture(scope="module")
def live(masakari_engine):
    with PacemakerEngine(masakari_engine) as env:
        yield env


def _rows(engine, host):
    return engine.api.notifications(type="COMPUTE_HOST", hostname=host)


def _final(engine, host, count, timeout=90):
    """The host's first ``count`` notifications once the engine is done with each."""
    rows = wait_for(lambda: (lambda r: r if len(r) >= count else None)(_rows(engine, host)),
                    timeout, interval=0.2, what=f"{count} notification(s) of {host} stored")
    for r in rows:
        engine.wait_final(r["notification_uuid"], timeout=timeout)
    return _rows(engine, host)


def _in_service(engine, host) -> bool:
    s = engine.nova.service(host)
    return (s["status"] == "enabled" and not s["forced_down"]
            and engine.api.host(host)["on_maintenance"] is False)


def test_fenced_node_evacuated_back_in_service_and_evacuated_again_within_the_window(live):
    engine, nova, c = live.engine, live.nova, live.cluster
    victim = live.victim()
    reporter = c.dc()
    first_servers = [nova.add_server(victim) for _ in range(2)]

    # -- first failure: killed, fenced, reported NORMAL, forced down, evacuated ------------
    t0 = time.time()
    c.kill(victim)
    wait_for(lambda: len(nova.evacuations(victim)) >= 2, 90, interval=0.1,
             what="first evacuation")
    first_evacuate = min(e.time for e in nova.evacuations(victim)) - t0
    rows = _final(engine, victim, 1)
    assert [(r["payload"], r["status"]) for r in rows] == [(STOPPED_NORMAL, "finished")]
    assert f"reboot {victim}" in c.fence_log() or f"off {victim}" in c.fence_log()
    assert sorted(e.server for e in nova.evacuations(victim)) == sorted(first_servers)
    assert nova.service(victim)["forced_down"] is True
    assert nova.service(victim)["status"] == "disabled"

    # -- back: it rejoins, STARTED reported, resurrect puts it back in service -------------
    live.rejoin(victim)
    wait_for(lambda: _in_service(engine, victim), 90, interval=0.2,
             what="back in service (resurrect)")
    rows = _final(engine, victim, 2)
    assert [(r["payload"], r["status"]) for r in rows][1] == (STARTED, "finished")

    # -- second failure within the window: new instances on it, killed again --------------
    second_servers = [nova.add_server(victim) for _ in range(2)]
    t2 = time.time()
    c.kill(victim)
    try:
        wait_for(lambda: len(nova.evacuations(victim)) >= 4, 90, interval=0.1,
                 what="second evacuation")
    except AssertionError as exc:  # say where it was lost: stored? answered 409?
        stored = [(r["payload"], r["status"]) for r in _rows(engine, victim)]
        raise AssertionError(f"{exc}; stored: {stored}; {reporter}'s history:\n"
                             f"{live.history(reporter, victim)}") from None
    second_evacuate = min(e.time for e in nova.evacuations(victim)[2:]) - t2
    _final(engine, victim, 3)
    time.sleep(GRACE + 2)  # a standby that (wrongly) reports does so within reporter_grace

    # what the engine did: three notifications, each finished; every instance evacuated once
    rows = _rows(engine, victim)
    assert [(r["payload"], r["status"]) for r in rows] == [
        (STOPPED_NORMAL, "finished"), (STARTED, "finished"), (STOPPED_NORMAL_2, "finished")]
    gap = (parse_time(rows[2]["generated_time"])
           - parse_time(rows[0]["generated_time"])).total_seconds()
    assert gap < 180, f"the second failure came {gap:.0f} s after the first: not in the window"
    evacuated = sorted(e.server for e in nova.evacuations(victim))
    assert evacuated == sorted(first_servers + second_servers)
    assert len(nova.evacuations(victim, ok_only=False)) == 4  # none refused by Nova
    assert nova.service(victim)["forced_down"] is True
    # what was sent: one row per event, all queued by the DC (nobody else reported)
    queued = live.queued(victim)
    assert queued == {n: 3 if n == reporter else 0 for n in live.nodes}, queued
    for n in live.nodes:
        if n != victim:
            assert _rows(engine, n) == [], f"{n} reported though it never failed"
    # which mechanism made the second failure new: the row's decision, its history, the log
    out = {r["id"]: r for r in live.outbox(reporter, victim)}
    first, back, again = sorted(out)
    why = out[again]["decision"]["distinct"]
    assert why["after"] == back and why["same_payload"] == first, why
    assert why["sent"] == "with cluster_status omitted", why
    assert out[again]["notification"]["payload"] == STOPPED_NORMAL_2
    text = live.history(reporter, victim)
    assert "sent as" in text and "with cluster_status omitted, which the engine treats alike" \
        in text, text
    # and the reporter's journal line of that detection
    line = next(ln for ln in live.daemons[reporter].log_text().splitlines()
                if f"queued as notification {again}; " in ln)
    assert "a new failure" in line and "sent with cluster_status omitted" in line, line
    print(f"kill → first evacuate {first_evacuate:.1f} s; second kill → its first evacuate "
          f"{second_evacuate:.1f} s; second failure {gap:.0f} s after the first")
