"""ha-pacemaker-alert run with the environment Pacemaker gives an alert agent; the result is
read back from the real masakari-api (delivered by the daemon's delivery worker)."""
from __future__ import annotations

import os
import subprocess
import time

from tests.fixtures.cib import Cib
from tests.helpers import BIN, wait_for, write_conf
from tests.hostmonitor.peers.helpers import PeerDaemon, outbox_rows, payloads, sent

STOPPED_NORMAL = {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "NORMAL"}
STOPPED_UNKNOWN = {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "UNKNOWN"}
STARTED = {"event": "STARTED", "cluster_status": "ONLINE", "host_status": "NORMAL"}


def _conf(tmp_path, api, me, **host):
    return write_conf(tmp_path / "hm.conf", hostname=me, state_path=tmp_path,
                      endpoint=api.endpoint, sections={
                          "host": {"monitoring_driver": "none", "stonith_wait": 2, **host}})


def alert(conf, cib: Cib | None, **crm) -> tuple[int, float, str]:
    """Run the agent as Pacemaker does: no arguments, CRM_alert_* variables, the recipient
    (here the configuration file) in CRM_alert_recipient."""
    now = time.time()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    env.update({"CRM_alert_version": "2.1.5", "CRM_alert_recipient": str(conf),
                "CRM_alert_node_sequence": "7", "CRM_alert_timestamp": time.strftime("%H:%M:%S"),
                "CRM_alert_timestamp_epoch": str(int(now)),
                "CRM_alert_timestamp_usec": "123456", **(cib.env if cib else {})})
    env.update({f"CRM_alert_{k}": str(v) for k, v in crm.items()})
    t0 = time.monotonic()
    proc = subprocess.run([str(BIN / "ha-pacemaker-alert")], env=env, capture_output=True,
                          text=True, timeout=30)
    return proc.returncode, time.monotonic() - t0, proc.stderr


def test_fencing_alert_returns_fast_with_api_down_and_is_delivered_later(
        tmp_path, masakari_api, peer_names):
    n = peer_names("me", "peer")
    conf = _conf(tmp_path, masakari_api, n["me"])
    cib = Cib(tmp_path / "cib.xml")
    cib.write({n["me"]: True, n["peer"]: False})  # me: the DC, so the reporter
    masakari_api.kill()
    try:
        # what Pacemaker 2.1.5 really sets: the action is only in the description
        rc, took, err = alert(conf, cib, kind="fencing", node=n["peer"],
                              task="st_notify_fence", rc=0,
                              desc=f"Operation reboot of {n['peer']} by {n['me']} for "
                                   f"pacemaker-controld.1041@{n['me']}: OK")
    finally:
        masakari_api.start()
    assert rc == 0, err
    assert took < 5, f"alert agent took {took:.2f}s (Pacemaker's default timeout is 30 s)"
    rows = outbox_rows(conf, n["peer"])
    assert [r["notification"]["payload"] for r in rows] == [STOPPED_NORMAL]
    with PeerDaemon(conf):  # its delivery worker sends what the agent queued
        got = wait_for(lambda: payloads(masakari_api, n["peer"]), 15, what="stored")
    assert got == [STOPPED_NORMAL]
    assert sent(masakari_api, n["peer"]) == [(STOPPED_NORMAL, 202)]  # POSTed once


def test_node_lost_without_fencing_is_unknown_then_back_is_started(
        tmp_path, masakari_api, peer_names):
    n = peer_names("me", "peer")
    conf = _conf(tmp_path, masakari_api, n["me"])
    cib = Cib(tmp_path / "cib.xml")
    cib.write({n["me"]: True, n["peer"]: False})
    with PeerDaemon(conf):
        rc, took, err = alert(conf, cib, kind="node", node=n["peer"], nodeid=2, desc="lost")
        assert rc == 0 and took < 5, err
        # no fencing alert within stonith_wait (2 s) and no fencer → UNKNOWN
        got = wait_for(lambda: payloads(masakari_api, n["peer"]), 15, what="UNKNOWN stored")
        assert sent(masakari_api, n["peer"]) == [(STOPPED_UNKNOWN, 202)]
        rc, _, err = alert(conf, cib, kind="node", node=n["peer"], nodeid=2, desc="member")
        assert rc == 0, err
        wait_for(lambda: len(payloads(masakari_api, n["peer"])) == 2, 15, what="STARTED")
        assert payloads(masakari_api, n["peer"])[1] == STARTED
        assert sent(masakari_api, n["peer"]) == [(STOPPED_UNKNOWN, 202), (STARTED, 202)]


def test_lost_then_fenced_gives_one_normal_report(tmp_path, masakari_api, peer_names):
    n = peer_names("me", "peer")
    conf = _conf(tmp_path, masakari_api, n["me"], stonith_wait=6)  # > two agent runs
    cib = Cib(tmp_path / "cib.xml")
    cib.write({n["me"]: True, n["peer"]: False})
    with PeerDaemon(conf):
        assert alert(conf, cib, kind="node", node=n["peer"], desc="lost")[0] == 0
        assert alert(conf, cib, kind="fencing", node=n["peer"], task="st_notify_fence", rc=0,
                     desc=f"Operation off of {n['peer']} by {n['me']} for x@{n['me']}: OK"
                     )[0] == 0
        wait_for(lambda: payloads(masakari_api, n["peer"]), 15, what="stored")
        time.sleep(7)  # past stonith_wait: the waiter must not add an UNKNOWN
        assert sent(masakari_api, n["peer"]) == [(STOPPED_NORMAL, 202)]  # one, POSTed once


def test_lost_without_quorum_and_failed_fencing_report_nothing(
        tmp_path, masakari_api, peer_names):
    n = peer_names("me", "peer")
    conf = _conf(tmp_path, masakari_api, n["me"], disable_ipmi_check="true")
    cib = Cib(tmp_path / "cib.xml")
    cib.write({n["me"]: True, n["peer"]: False}, quorum=False)
    rc, _, err = alert(conf, cib, kind="node", node=n["peer"], desc="lost")
    assert rc == 0 and "no quorum" in err
    rc, _, err = alert(conf, cib, kind="fencing", node=n["peer"], task="st_notify_fence",
                       rc=1, desc=f"Operation reboot of {n['peer']} by {n['me']} for "
                                  f"x@{n['me']}: Error")
    assert rc == 0
    # resource alerts are not ours
    assert alert(conf, cib, kind="resource", node=n["me"], rsc="vip", task="monitor",
                 desc="OK", rc=0)[0] == 0
    assert outbox_rows(conf) == []


def test_not_called_by_pacemaker_is_a_clear_error(tmp_path, masakari_api, peer_names):
    n = peer_names("me")
    conf = _conf(tmp_path, masakari_api, n["me"])
    proc = subprocess.run([str(BIN / "ha-pacemaker-alert"), "--config-file", str(conf)],
                          env={k: v for k, v in os.environ.items() if not k.startswith("CRM_")},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "CRM_alert_kind" in proc.stderr


def test_a_failure_is_one_clear_line_not_a_traceback(tmp_path, masakari_api, peer_names):
    """Pacemaker copies the agent's stderr into pacemaker.log: a failure (here the state
    directory is a file, so no marker can be written) must be one line naming the cause."""
    n = peer_names("me", "peer")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    conf = write_conf(tmp_path / "hm.conf", hostname=n["me"], state_path=blocker,
                      endpoint=masakari_api.endpoint,
                      sections={"host": {"monitoring_driver": "none"}})
    cib = Cib(tmp_path / "cib.xml")
    cib.write({n["me"]: True, n["peer"]: False})
    rc, _, err = alert(conf, cib, kind="fencing", node=n["peer"], task="st_notify_fence", rc=0,
                       desc=f"Operation reboot of {n['peer']} by {n['me']} for x@{n['me']}: OK")
    assert rc == 1
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "ERROR" in lines[0] and "not-a-dir" in lines[0], err


def test_a_standby_whose_node_is_back_reports_nothing(tmp_path, masakari_api, peer_names,
                                                      monkeypatch):
    """Seen on the live cluster: Pacemaker runs the node and the fencing alert of one failure
    at once; a 'lost' handled after the fencing sent a waiter after a fencing that had
    already happened, and when that standby's grace ended the DC had recorded the node
    back (STARTED) — which did not cover the STOPPED, so the standby reported the failure of
    a node that was back, and then its STARTED again."""
    from hostmonitor.peers import crm

    n = peer_names("dc", "me", "peer")
    conf = write_conf(tmp_path / "hm.conf", hostname=n["me"], state_path=tmp_path,
                      endpoint=masakari_api.endpoint, sections={
                          "host": {"monitoring_driver": "none", "stonith_wait": 1},
                          "hostmonitor_peers": {"reporter_grace": 3}})
    cib = Cib(tmp_path / "cib.xml")
    cib.write({n["dc"]: True, n["me"]: True, n["peer"]: False})  # dc is the DC: me stands by
    monkeypatch.setenv("CIB_file", str(cib.path))

    def record(event: str, status: str) -> None:  # what the DC writes when it reports
        crm.write_report("crm_mon", n["peer"], crm.Report(event, status, time.time(), n["dc"]),
                         10)

    record("STOPPED", "NORMAL")
    fenced = dict(kind="fencing", node=n["peer"], task="st_notify_fence", rc=0,
                  desc=f"Operation reboot of {n['peer']} by {n['dc']} for x@{n['dc']}: OK")
    assert alert(conf, cib, **fenced)[0] == 0  # its standby waits 3 s
    rc, _, err = alert(conf, cib, kind="node", node=n["peer"], desc="lost")  # after the fencing
    assert rc == 0 and "already seen" in err, err
    time.sleep(1.5)
    record("STARTED", "NORMAL")  # the node is back and the DC said so
    assert alert(conf, cib, kind="node", node=n["peer"], desc="member")[0] == 0
    time.sleep(6)  # past stonith_wait + reporter_grace of every waiter
    assert outbox_rows(conf, n["peer"]) == []
    log = (tmp_path / "pacemaker-alert" / "agent.log").read_text()
    assert "standing by" in log and "reporting as standby" not in log, log
