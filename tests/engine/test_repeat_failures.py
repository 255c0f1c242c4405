"""A subject that fails, is recovered, and fails again within masakari-api's duplicate
window is recovered twice, through the real masakari-api and masakari-engine.

masakari-api answers 409 "duplicate" to a notification whose type, host and payload equal
one stored with a generated_time less than duplicate_notification_detection_interval
earlier; before monitors.recipient.distinct the second failure was swallowed that way. Here:

- a fenced host, evacuated, back in service (resurrect), fenced again within the window
  (180 s, masakari's default): sent with the other form of cluster_status at once,
  evacuated again; the same failure detected once more is still answered 409 duplicate;
- a real QEMU guest killed, restarted by the engine, killed again within the window (a
  second engine with a 30 s window, so the test does not wait 3 minutes): the second
  failure has only one form, so its generated_time is the window's end and its delivery is
  held until then; the engine restarts the instance a second time;
- nova-compute stopped, disabled, back (resurrect), stopped again: disabled again.

Every claim counts what was POSTed (the API's stored rows and our deliveries' answers),
not only what the API kept. Nova is the recording stand-in (tests/fixtures/keystone_nova.py).
"""
from __future__ import annotations

import datetime as dt
import os
import signal
import time
import uuid as uuidlib

import pytest

from hostmonitor import payloads
from monitors import actions
from monitors.history import ReadModel
from monitors.notification import PROCESS, VM, Notification, parse_time
from monitors.outbox import Outbox
from tests.engine.conftest import new_host
from tests.engine.test_recovery_loop import Monitors, fail_host
from tests.fixtures.libvirtd import QemuLibvirtd, qemu_available
from tests.fixtures.masakari_engine import MasakariEngine
from tests.helpers import Daemon, recovery_conf, wait_for, write_conf

WINDOW = 30  # the second engine's duplicate_notification_detection_interval


def _masakari(row: dict) -> dict:
    return next(d for d in row["deliveries"] if d["driver"] == "masakari")


@pytest.fixture
def monitors(tmp_path, engine):
    made = []

    def make(api, **nova):
        conf = recovery_conf(tmp_path / str(len(made)), api, **nova)
        m = Monitors(conf, tmp_path / str(len(made)))
        made.append(m)
        return m
    yield make
    for m in made:
        m.close()


def test_a_host_fenced_twice_within_the_window_is_evacuated_twice(engine, nova, host, peer,
                                                                  monitors):
    m = monitors(engine.api, force_down=True, resurrect=True)
    first_servers = [nova.add_server(host) for _ in range(2)]
    first, _ = fail_host(engine, nova, m, host)
    assert sorted(c.server for c in nova.calls(host=host, action="evacuate")) == sorted(
        first_servers)
    # Back: repaired, rebooted, its nova-compute reports again; resurrect puts it back in
    # service (maintenance off), so Masakari takes the STARTED.
    nova.set_service(host, state="up")
    back = m.settled(m.emit(payloads.started(host), decision={"driver": "test"}).id)
    assert {d["driver"]: d["state"] for d in back["deliveries"]} == {
        "masakari": "delivered", actions.RESURRECT: "delivered"}
    second_servers = [nova.add_server(host) for _ in range(2)]
    # Fenced again, well within 180 s of the first failure.
    again = m.emit(payloads.stopped(host, fenced=True),
                   decision={"driver": "test", "fencing": "confirmed (test)"}).id
    row = m.settled(again)
    assert _masakari(row)["last_status"] == 202, _masakari(row)
    why = row["decision"]["distinct"]
    assert why["after"] == back["id"] and why["same_payload"] == first
    assert why["sent"] == "with cluster_status omitted"
    assert row["notification"]["payload"] == {"event": "STOPPED", "host_status": "NORMAL"}
    assert engine.wait_final(_masakari(row)["remote_id"])["status"] == "finished"
    wait_for(lambda: len(nova.calls(host=host, action="evacuate")) >= 4, 30,
             what="second evacuation")
    evacuated = [c.server for c in nova.calls(host=host, action="evacuate")]
    assert sorted(evacuated) == sorted(first_servers + second_servers)  # each once
    # What was sent: each failure and the return accepted once; the return may have been
    # asked again while the host was still on maintenance (409 held), nothing else.
    posts = engine.api.posts(hostname=host, type="COMPUTE_HOST")
    assert all("maintenance" in str(p.answer) for p in posts if p.status == 409)
    sent = [(p.payload, p.status) for p in posts if p.status != 409]
    assert sent == [(payloads.stopped(host, fenced=True).payload, 202),
                    (payloads.started(host).payload, 202),
                    ({"event": "STOPPED", "host_status": "NORMAL"}, 202)], sent
    # The same failure detected again (a second reporter, no clearing in between) keeps
    # the form of what it repeats; the host is on maintenance now, so Masakari holds it
    # (409), and the host's return withdraws it: no third recovery.
    nid = m.emit(payloads.stopped(host, fenced=True),
                 decision={"driver": "test", "fencing": "confirmed (test)"}).id
    repeat = ReadModel(m.box).get(nid)
    assert repeat["decision"]["distinct"]["repeat_of"] == again
    assert repeat["notification"]["payload"] == row["notification"]["payload"]
    wait_for(lambda: _masakari(ReadModel(m.box).get(nid))["last_outcome"] == "held", 30,
             what="the repeat held (host on maintenance)")
    nova.set_service(host, state="up")
    m.settled(m.emit(payloads.started(host), decision={"driver": "test"}).id)
    assert m.settled(nid)["state"] == "superseded"
    assert len(nova.calls(host=host, action="evacuate")) == 4  # no third evacuation


# -- one form only: the window is waited out ----------------------------------------------
@pytest.fixture(scope="module")
def short_engine(tmp_path_factory, rabbitmq):
    """A second masakari-api + -engine with a 30 s duplicate window, on its own RPC topic
    (the session engine shares the broker)."""
    engine = MasakariEngine(tmp_path_factory.mktemp("engine-window"), rabbitmq, options={
        "DEFAULT": {"duplicate_notification_detection_interval": WINDOW,
                    "masakari_topic": "ha_engine_window"}})
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def qemu_libvirtd(tmp_path_factory):
    d = QemuLibvirtd(tmp_path_factory.mktemp("repeat-qemu"))
    d.start()
    yield d
    d.stop()


GUEST = """<domain type='qemu'>
  <name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os><on_crash>destroy</on_crash>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator><memballoon model='none'/>
  </devices>
</domain>"""


@pytest.mark.skipif(not qemu_available(), reason="qemu-system-x86 not installed")
def test_a_guest_killed_twice_within_the_window_is_restarted_twice(
        short_engine, qemu_libvirtd, tmp_path):
    engine, nova = short_engine, short_engine.nova
    host = new_host(engine, "vm2x")
    name = f"g2-{os.getpid()}-{uuidlib.uuid4().hex[:6]}"
    conn = qemu_libvirtd.hold()
    dom = conn.defineXML(GUEST.format(name=name, uuid=uuidlib.uuid4()))
    dom.create()
    server = nova.add_server(host, server_id=dom.UUIDString(), name=name)

    def start_domain(server_id, action, body):
        if server_id == server and action == "os-start" and not dom.isActive():
            dom.create()
    nova.on_action(start_domain)
    state = tmp_path / "state"
    state.mkdir()
    conf = write_conf(tmp_path / "im.conf", hostname=host, state_path=state,
                      endpoint=engine.api.endpoint,
                      sections={"libvirt": {"connection_uri": qemu_libvirtd.uri},
                                "delivery": {"duplicate_notification_detection_interval":
                                             WINDOW}})
    d = Daemon("instancemonitor", conf).start()
    try:
        def failed_rows():
            return [r for r in engine.api.notifications(type="VM", hostname=host)
                    if r["payload"]["vir_domain_event"] == "STOPPED_FAILED"]

        os.kill(qemu_libvirtd.qemu_pid(name), signal.SIGKILL)
        first = wait_for(lambda: failed_rows(), 60, interval=0.3, what="first failure stored")
        assert engine.wait_final(first[0]["notification_uuid"])["status"] == "finished"
        wait_for(lambda: dom.isActive(), 30, what="domain restarted by the engine")
        time.sleep(1.5)  # seen running a moment (the STARTED event is not sent)
        killed_again = time.time()
        os.kill(qemu_libvirtd.qemu_pid(name), signal.SIGKILL)
        both = wait_for(lambda: (lambda r: r if len(r) >= 2 else None)(failed_rows()),
                        WINDOW + 60, interval=0.5, what="second failure stored")
        second = both[1]
        assert engine.wait_final(second["notification_uuid"])["status"] == "finished"
        wait_for(lambda: dom.isActive(), 30, what="domain restarted a second time")
        stopped_started = [a for _, a, _ in nova.actions(host)]
        box = Outbox(str(state / "outbox.sqlite"))
        rows = [r for r in ReadModel(box).list(type=VM, with_history=True)
                if r["notification"]["payload"]["vir_domain_event"] == "STOPPED_FAILED"]
        box.close()
    finally:
        d.stop()
        d.notify.close()
        try:
            if dom.isActive():
                dom.destroy()
        finally:
            dom.undefine()
    assert stopped_started == ["os-stop", "os-start", "os-stop", "os-start"]
    sent = [p.status for p in engine.api.posts(hostname=host)
            if p.payload.get("vir_domain_event") == "STOPPED_FAILED"]
    assert sent == [202, 202]  # each failure POSTed once
    # Each failure POSTed once and accepted (202): nothing answered 409.
    assert len(rows) == 2
    for row in rows:
        answers = [(h["status"], h["outcome"]) for h in row["history"] if h["kind"] == "answer"]
        assert answers == [(202, "delivered")], answers
    why = rows[1]["decision"]["distinct"]
    assert "saw the subject healthy" in why["why"], why
    assert "no other form of the payload is free" in why["why"], why
    # generated_time moved to the window's end; the POST waited for it, not longer than
    # needed (a few seconds of delivery backoff at most)
    generated = parse_time(second["generated_time"])
    gap = (generated - parse_time(first[0]["generated_time"])).total_seconds()
    assert WINDOW < gap <= WINDOW + 2, gap
    attempt = next(h for h in rows[1]["history"] if h["kind"] == "attempt")
    assert attempt["at"] >= generated.replace(tzinfo=dt.timezone.utc).timestamp() - 0.5
    assert rows[1]["created_at"] - killed_again < 15  # detected at once, only held


def test_nova_compute_stopped_twice_within_the_window_is_disabled_twice(short_engine, tmp_path):
    engine, nova = short_engine, short_engine.nova
    host = new_host(engine, "proc2x")
    conf = recovery_conf(tmp_path, engine.api, resurrect=True)
    conf.set_override("duplicate_notification_detection_interval", WINDOW, group="delivery")
    m = Monitors(conf, tmp_path)
    try:
        def proc(event):
            return Notification.create(PROCESS, host, {"event": event,
                                                       "process_name": "nova-compute"})
        first = m.settled(m.emit(proc("STOPPED")).id)
        assert engine.wait_final(_masakari(first)["remote_id"])["status"] == "finished"
        assert nova.service(host)["status"] == "disabled"
        back = m.settled(m.emit(proc("STARTED")).id)
        assert nova.service(host)["status"] == "enabled"
        assert engine.api.host(host)["on_maintenance"] is False
        nid = m.emit(proc("STOPPED")).id
        held = ReadModel(m.box).get(nid)
        assert held["state"] == "pending"
        assert held["decision"]["distinct"]["after"] == back["id"]
        second = m.settled(nid, timeout=WINDOW + 30)
        assert _masakari(second)["last_status"] == 202
        assert engine.wait_final(_masakari(second)["remote_id"])["status"] == "finished"
        assert nova.service(host)["status"] == "disabled"
        disables = [u for u in nova.service_updates(host) if u.get("status") == "disabled"]
        assert len(disables) == 2
        posts = engine.api.posts(hostname=host)
        # the STARTED may be asked again while the host is still on maintenance (held)
        assert all("maintenance" in str(p.answer) for p in posts if p.status == 409)
        sent = [(p.payload["event"], p.status) for p in posts if p.status != 409]
        assert sent == [("STOPPED", 202), ("STARTED", 202), ("STOPPED", 202)], sent
    finally:
        m.close()
