"""Connection loss and reconciliation, against a real libvirtd and the real API:
libvirtd killed and restarted, the daemon killed and restarted, libvirtd absent at start."""
from __future__ import annotations

import collections
import json
import time

from tests.helpers import Daemon, wait_for
from tests.instancemonitor.conftest import outbox_rows, vm_events, vm_sent


def _stored(api, host, n, timeout=15):
    return wait_for(lambda: (lambda ev: ev if len(ev) >= n else None)(vm_events(api, host)),
                    timeout, what=f"{n} VM notifications stored by the API")


def _sent_once(api, host, expected):
    """Each of ``expected`` (event, uuid, vir_domain_event) POSTed exactly once, accepted,
    nothing else: counted at the API's door, since a re-send is 409'd and never stored."""
    sent = collections.Counter(vm_sent(api, host))
    assert sent == collections.Counter((*e, 202) for e in expected), sent


def _delivered(state_path):
    """Before a SIGKILL: every outbox row answered, so the next daemon has nothing in
    flight to re-send (that case is tests/monitors/test_runtime.py's)."""
    wait_for(lambda: all(r["state"] == "delivered" for r in outbox_rows(state_path)), 10,
             what="outbox rows delivered")


def test_libvirtd_killed_and_restarted_reconciles(libvirtd, make_daemon, masakari_api, host,
                                                  tmp_path):
    a, b, c = (libvirtd.create(f"inst-{i}") for i in range(3))
    daemon = make_daemon(host)
    a.destroy()  # live event, before the crash
    _stored(masakari_api, host, 1)
    b_uuid, c_uuid = b.UUIDString(), c.UUIDString()

    # libvirtd dies: the test driver's domains go with it (like guests whose qemu died
    # while libvirtd was down); b and c were running.
    libvirtd.kill()
    wait_for(lambda: "connection to" in daemon.log_text() and "closed" in daemon.log_text(),
             5, what="close callback noticed")
    libvirtd.start()
    libvirtd.hold()
    _stored(masakari_api, host, 3)
    first = [("LIFECYCLE", a.UUIDString(), "STOPPED_DESTROYED"),
             ("LIFECYCLE", b_uuid, "STOPPED_FAILED"),
             ("LIFECYCLE", c_uuid, "STOPPED_FAILED")]
    _sent_once(masakari_api, host, first)

    # callbacks were re-registered: a live event after the reconnect is reported
    d = libvirtd.create("inst-after")
    d.destroy()
    _stored(masakari_api, host, 4)

    # a second crash and restart: nothing was running, nothing is reported (not twice)
    libvirtd.kill()
    libvirtd.start()
    libvirtd.hold()
    wait_for(lambda: daemon.log_text().count("reconciled ") >= 3, 10, what="third reconcile")
    time.sleep(0.5)
    events = vm_events(masakari_api, host)
    assert len(events) == 4, events
    _sent_once(masakari_api, host, first + [("LIFECYCLE", d.UUIDString(), "STOPPED_DESTROYED")])
    rows = {r["notification"]["payload"]["instance_uuid"]: r for r in outbox_rows(tmp_path / "state")}
    assert rows[b_uuid]["decision"]["reconciled"] is True
    assert rows[b_uuid]["decision"]["now"] == "vanished"
    assert "reconciled" not in rows[d.UUIDString()]["decision"]


def test_daemon_killed_and_restarted_reconciles(libvirtd, make_daemon, masakari_api, host,
                                                tmp_path):
    a, b, c, e = (libvirtd.create(f"inst-{i}") for i in range(4))
    daemon = make_daemon(host)
    a.destroy()
    _stored(masakari_api, host, 1)
    _delivered(tmp_path / "state")
    daemon.kill()  # SIGKILL: no graceful save

    b.destroy()
    c.shutdown()
    e.suspend()  # paused by the user: not a failure
    daemon2 = Daemon("instancemonitor", daemon.conf)
    daemon2.start()
    try:
        _stored(masakari_api, host, 3)
        reported = [("LIFECYCLE", a.UUIDString(), "STOPPED_DESTROYED"),
                    ("LIFECYCLE", b.UUIDString(), "STOPPED_DESTROYED"),
                    ("LIFECYCLE", c.UUIDString(), "STOPPED_SHUTDOWN")]
        _sent_once(masakari_api, host, reported)
        _delivered(tmp_path / "state")
        daemon2.kill()
    finally:
        daemon2.stop()
        daemon2.notify.close()
    daemon3 = Daemon("instancemonitor", daemon.conf)
    with daemon3:
        wait_for(lambda: "reconciled " in daemon3.log_text(), 5, what="reconcile")
        wait_for(lambda: all(r["state"] != "pending" for r in outbox_rows(tmp_path / "state")),
                 10, what="outbox drained")
        time.sleep(0.3)
        events = vm_events(masakari_api, host)
        assert len(events) == 3, events
        _sent_once(masakari_api, host, reported)
    recon = [r for r in outbox_rows(tmp_path / "state") if r["decision"].get("reconciled")]
    assert {r["notification"]["payload"]["instance_uuid"] for r in recon} == {
        b.UUIDString(), c.UUIDString()}
    state = json.loads((tmp_path / "state" / "instancemonitor-domains.json").read_text())
    assert state["domains"][e.UUIDString()]["state"] == "paused"


def test_libvirtd_down_at_start(libvirtd, make_daemon, masakari_api, host):
    libvirtd.kill()
    daemon = make_daemon(host)
    ready = daemon.notify.wait_for("READY")
    assert "unreachable" in ready["STATUS"], ready
    assert "unreachable" in daemon.log_text()
    libvirtd.start()
    libvirtd.hold()
    wait_for(lambda: "connected to libvirt" in daemon.log_text(), 5, what="connected")
    dom = libvirtd.create("late")
    dom.destroy()
    assert _stored(masakari_api, host, 1) == [("LIFECYCLE", dom.UUIDString(),
                                              "STOPPED_DESTROYED")]
    wait_for(lambda: any("connected to" in m.get("STATUS", "")
                         for m in daemon.notify.drain()), 8, what="STATUS says connected")


def _sigstop(libvirtd):
    import os
    import signal
    os.killpg(libvirtd.proc.pid, signal.SIGSTOP)


def _sigcont(libvirtd):
    import os
    import signal
    os.killpg(libvirtd.proc.pid, signal.SIGCONT)


def test_hung_libvirtd_at_start_does_not_block_ready(libvirtd, make_daemon, masakari_api,
                                                     host):
    """libvirtd SIGSTOPped: its socket accepts, nothing answers, openReadOnly would wait
    forever. The daemon is READY anyway, says what is wrong, and connects once it answers."""
    from tests.helpers import cli

    _sigstop(libvirtd)
    try:
        started = time.monotonic()
        daemon = make_daemon(host)  # waits for READY
        assert time.monotonic() - started < 15
        status = wait_for(lambda: (lambda r: r if "libvirtd hung" in r.stdout else None)(
            cli(daemon.conf, "status")), 20, what="status naming the hung libvirtd")
        assert status.returncode == 2  # CRITICAL: nothing is watched
        assert "source libvirt: libvirt " in status.stdout
    finally:
        _sigcont(libvirtd)
    wait_for(lambda: "connected to libvirt" in daemon.log_text(), 15, what="connected")
    dom = libvirtd.create("after-hang")
    dom.destroy()
    assert _stored(masakari_api, host, 1) == [("LIFECYCLE", dom.UUIDString(),
                                              "STOPPED_DESTROYED")]


def test_guest_agent_connection_has_a_keepalive(libvirtd, make_daemon, host):
    """The guest-agent heartbeat's own read-write connection: a libvirtd that stops
    answering mid-round ends the round by keepalive (and is reconnected later) instead of
    hanging the heartbeat forever."""
    libvirtd.create("with-agent-loop")
    daemon = make_daemon(host, sections={"introspectiveinstancemonitor": {
        "guest_monitoring_interval": 1}}, guest_agent_heartbeat="true")
    time.sleep(1.5)  # the heartbeat has connected and done a round
    _sigstop(libvirtd)
    try:
        wait_for(lambda: "guest-agent heartbeat round failed" in daemon.log_text(), 20,
                 what="the hung round ended by keepalive")
    finally:
        _sigcont(libvirtd)
    assert daemon.proc.poll() is None


def test_killed_after_the_report_before_the_state_save(libvirtd, make_daemon, masakari_api,
                                                       host, tmp_path):
    """The daemon dies after a failure is in the outbox (and delivered) but before the
    domain-state file recorded it: the restart's reconcile sees the failure again and must
    not send it twice. Saves are made to fail (a directory where statefile's temporary file
    goes), so the kill lands in that window every time."""
    import os

    a = libvirtd.create("inst-window")
    daemon = make_daemon(host)
    state_file = tmp_path / "state" / "instancemonitor-domains.json"
    wait_for(lambda: a.UUIDString() in state_file.read_text(), 5, what="startup state saved")
    blocker = tmp_path / "state" / f"instancemonitor-domains.json.tmp.{daemon.proc.pid}"
    blocker.mkdir()
    a.destroy()
    assert _stored(masakari_api, host, 1) == [("LIFECYCLE", a.UUIDString(),
                                              "STOPPED_DESTROYED")]
    wait_for(lambda: "cannot write" in daemon.log_text(), 5, what="a failed state save")
    _delivered(tmp_path / "state")
    daemon.kill()
    saved = json.loads(state_file.read_text())
    assert saved["domains"][a.UUIDString()]["state"] == "running"  # the window was hit
    blocker.rmdir()

    again = Daemon("instancemonitor", daemon.conf)
    with again:
        wait_for(lambda: "reconciled " in again.log_text(), 5, what="reconcile")
        assert "STOPPED_DESTROYED of %s already recorded; not reported twice" % \
            a.UUIDString() in again.log_text()
        time.sleep(1.0)  # a second report, had there been one, is delivered by now
        assert vm_events(masakari_api, host) == [("LIFECYCLE", a.UUIDString(),
                                                  "STOPPED_DESTROYED")]
        _sent_once(masakari_api, host, [("LIFECYCLE", a.UUIDString(), "STOPPED_DESTROYED")])
        rows = [r for r in outbox_rows(tmp_path / "state")
                if r["notification"]["payload"]["instance_uuid"] == a.UUIDString()]
        assert len(rows) == 1 and rows[0]["state"] == "delivered", rows
        wait_for(lambda: json.loads(state_file.read_text())["domains"][a.UUIDString()][
            "state"] == "shutoff", 5, what="the state file caught up")
    assert not os.path.exists(tmp_path / "state" / "instancemonitor-reporting.jsonl") or \
        (tmp_path / "state" / "instancemonitor-reporting.jsonl").stat().st_size == 0
