"""The Pacemaker poll driver on real `crm_mon --output-as=xml` output (CIB_file), as a real
daemon, with every result read back from the real masakari-api."""
from __future__ import annotations

import time

import pytest

from tests.fixtures.cib import Cib
from tests.helpers import wait_for, write_conf
from tests.hostmonitor.peers.helpers import PeerDaemon, payloads, sent

STOPPED_UNKNOWN = {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "UNKNOWN"}
STOPPED_NORMAL = {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "NORMAL"}
STARTED = {"event": "STARTED", "cluster_status": "ONLINE", "host_status": "NORMAL"}


def _daemon(tmp_path, api, me, cib, samples=1, stonith_admin="stonith_admin", env=None,
            **host):
    conf = write_conf(tmp_path / "hm.conf", hostname=me, state_path=tmp_path,
                      endpoint=api.endpoint, sections={
                          "host": {"monitoring_driver": "default", "monitoring_interval": 1,
                                   "monitoring_samples": samples, "stonith_wait": 2, **host},
                          "hostmonitor_peers": {"stonith_admin_command": stonith_admin,
                                                "command_timeout": 5}})
    return PeerDaemon(conf, env={**cib.env, **(env or {})})


def test_offline_at_start_is_reported_unknown_when_fencer_unreachable_then_back(
        tmp_path, masakari_api, peer_names):
    n = peer_names("me", "peer", "remote")
    cib = Cib(tmp_path / "cib.xml")
    cib.write({n["me"]: True, n["peer"]: False}, remotes={n["remote"]: True})
    with _daemon(tmp_path, masakari_api, n["me"], cib) as d:
        # No silent baseline: the peer offline at start is reported. With CIB_file the real
        # stonith_admin cannot reach a fencer (exit 102) → fencing unconfirmed → UNKNOWN.
        got = wait_for(lambda: payloads(masakari_api, n["peer"]), 15, what="STOPPED stored")
        assert sent(masakari_api, n["peer"]) == [(STOPPED_UNKNOWN, 202)]  # POSTed once
        # the reporter records the report in the CIB right after storing it
        wait_for(lambda: cib.recorded(n["peer"], "STOPPED"), 15, what="report recorded")
        cib.write({n["me"]: True, n["peer"]: True}, remotes={n["remote"]: False})
        wait_for(lambda: len(payloads(masakari_api, n["peer"])) == 2, 15, what="STARTED")
        assert payloads(masakari_api, n["peer"])[1] == STARTED
        # a pacemaker-remote node going offline is a peer failure too
        got = wait_for(lambda: payloads(masakari_api, n["remote"]), 15, what="remote STOPPED")
        assert got == [STOPPED_UNKNOWN]
        assert sent(masakari_api, n["me"]) == []
        time.sleep(2)  # two more polls: the same views must not be sent again
        assert sent(masakari_api, n["peer"]) == [(STOPPED_UNKNOWN, 202), (STARTED, 202)]
        assert sent(masakari_api, n["remote"]) == [(STOPPED_UNKNOWN, 202)]


def test_crm_mon_failure_is_named_once_in_status(tmp_path, masakari_api, peer_names):
    """STATUS used to read 'crm_mon: crm_mon: exit 102 ...'."""
    n = peer_names("me")
    cib = Cib(tmp_path / "missing-cib.xml")  # never written: crm_mon fails
    with _daemon(tmp_path, masakari_api, n["me"], cib) as d:
        def status():
            d.notify.drain()
            return next((m["STATUS"] for m in reversed(d.notify.messages)
                         if "crm_mon" in m.get("STATUS", "")), None)
        text = wait_for(status, 15, what="STATUS naming crm_mon")
    assert "crm_mon: " in text and "crm_mon: crm_mon" not in text, text


def test_no_report_without_quorum_nor_when_self_offline(tmp_path, masakari_api, peer_names):
    n = peer_names("me", "peer", "other")
    cib = Cib(tmp_path / "cib.xml")
    cib.write({n["me"]: True, n["peer"]: False, n["other"]: True}, quorum=False)
    with _daemon(tmp_path, masakari_api, n["me"], cib, disable_ipmi_check="true") as d:
        time.sleep(3.5)
        assert payloads(masakari_api, n["peer"]) == []
        # this node is the one shown offline (quorum elsewhere): it reports nobody
        cib.write({n["me"]: False, n["peer"]: False, n["other"]: True}, quorum=True)
        time.sleep(2.5)
        assert payloads(masakari_api, n["peer"]) == []
        cib.write({n["me"]: True, n["peer"]: False, n["other"]: True}, quorum=True)
        got = wait_for(lambda: payloads(masakari_api, n["peer"]), 15, what="STOPPED stored")
        assert got == [STOPPED_NORMAL]  # disable_ipmi_check: no fencing confirmation needed
        time.sleep(2)  # two more polls of the same view
        assert sent(masakari_api, n["peer"]) == [(STOPPED_NORMAL, 202)]
        assert "no quorum" in d.log_text()


@pytest.mark.slow
def test_flapping_is_damped_by_monitoring_samples(tmp_path, masakari_api, peer_names):
    n = peer_names("me", "peer")
    cib = Cib(tmp_path / "cib.xml")
    cib.write({n["me"]: True, n["peer"]: True})
    with _daemon(tmp_path, masakari_api, n["me"], cib, samples=3):
        # the peer flaps every 1.5 s; polls 1 s apart never see 3 equal states in a row
        for i in range(5):
            cib.write({n["me"]: True, n["peer"]: i % 2 == 1})
            time.sleep(1.5)
        assert payloads(masakari_api, n["peer"]) == []
        cib.write({n["me"]: True, n["peer"]: False})
        got = wait_for(lambda: payloads(masakari_api, n["peer"]), 15, what="STOPPED stored")
        assert got == [STOPPED_UNKNOWN]
        time.sleep(2)  # two more polls of the same view
        assert sent(masakari_api, n["peer"]) == [(STOPPED_UNKNOWN, 202)]


def test_restart_neither_repeats_nor_forgets(tmp_path, masakari_api, peer_names):
    n = peer_names("me", "peer")
    cib = Cib(tmp_path / "cib.xml")
    cib.write({n["me"]: True, n["peer"]: False})
    d = _daemon(tmp_path, masakari_api, n["me"], cib).start()
    try:
        wait_for(lambda: payloads(masakari_api, n["peer"]), 15, what="STOPPED stored")
    finally:
        d.stop()
    cib.write({n["me"]: True, n["peer"]: True})
    with _daemon(tmp_path, masakari_api, n["me"], cib):
        wait_for(lambda: len(payloads(masakari_api, n["peer"])) == 2, 15, what="STARTED")
    assert payloads(masakari_api, n["peer"]) == [STOPPED_UNKNOWN, STARTED]
    # neither repeated at the API's door (a repeat would be 409'd, not stored)
    assert sent(masakari_api, n["peer"]) == [(STOPPED_UNKNOWN, 202), (STARTED, 202)]
