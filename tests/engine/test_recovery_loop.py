"""Closing the recovery loop, through the real masakari-engine and the recording Nova:

- a fenced peer host is forced down in Nova *before* Masakari hears of it, so the engine's
  first evacuate (engine at the recommended wait_period_after_service_update = 1 s) is
  accepted within a few seconds of the fencing confirmation, and never refused;
- a host that is not confirmed fenced is never forced down;
- when the host (or nova-compute) is back, resurrect puts it back in service without a
  person — unless a person disabled the service, which is never undone.

The notifications are the peer sources' (hostmonitor.payloads); whether fencing is
confirmed is the peer sources' business (tests/hostmonitor). Nova is the recording
stand-in (tests/fixtures/keystone_nova.py); the real Nova's answers: test_real_nova.py.
"""
from __future__ import annotations

import contextlib
import logging
import time

import pytest

from hostmonitor import payloads
from monitors import actions, drivers
from monitors.delivery import DeliveryWorker
from monitors.notification import PROCESS, Notification
from monitors.history import ReadModel
from monitors.outbox import Outbox
from monitors.emitter import Emitter
from tests.helpers import recovery_conf, wait_for

MASAKARI_HOST_FAILED = "Masakari detected host failed."


class Monitors:
    """What a hostmonitor daemon runs: the Emitter (routing) and the delivery worker."""

    def __init__(self, conf, tmp_path):
        self.conf = conf
        self.box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
        names = [*conf.delivery.drivers, *actions.enabled(conf)]
        self.worker = DeliveryWorker(conf, self.box, drivers.load(conf, names), threads=2)
        self.emit = Emitter(conf, self.box, "hostmonitor/peers")
        self.worker.start()

    def settled(self, nid, timeout=60.0):
        return wait_for(lambda: (r := ReadModel(self.box).get(nid))["state"] != "pending" and r,
                        timeout, what=f"notification {nid} leaving the outbox")

    def answered(self, nid, driver, timeout=60.0):
        """The row once ``driver``'s delivery of it has an answer that ended it."""
        def done():
            row = ReadModel(self.box).get(nid)
            d = next(d for d in row["deliveries"] if d["driver"] == driver)
            return d["state"] != "pending" and row
        return wait_for(done, timeout, what=f"{driver} delivery of notification {nid}")

    def close(self):
        self.worker.stop(5)
        self.box.close()


@contextlib.contextmanager
def making_monitors(tmp_path, engine):
    """A factory of Monitors against ``engine``'s API (``[nova]`` options as keywords),
    each in a directory of its own; all closed at the end."""
    made = []

    def make(**nova):
        m = Monitors(recovery_conf(tmp_path / str(len(made)), engine.api, **nova),
                     tmp_path / str(len(made)))
        made.append(m)
        return m
    try:
        yield make
    finally:
        for m in made:
            m.close()


@pytest.fixture
def monitors(tmp_path, engine):
    with making_monitors(tmp_path, engine) as make:
        yield make


def fail_host(engine, nova, m, host):
    """The peer source's verdict after confirmed fencing; returns (row id, t0)."""
    t0 = time.time()
    nid = m.emit(payloads.stopped(host, fenced=True),
                 decision={"driver": "test", "fencing": "confirmed (test)"}).id
    wait_for(lambda: len(nova.evacuations(host)) >= 1, 30, what="first evacuate")
    row = m.settled(nid)
    remote = next(d["remote_id"] for d in row["deliveries"] if d["driver"] == "masakari")
    assert engine.wait_final(remote)["status"] == "finished"
    return nid, t0


def test_a_fenced_peer_is_forced_down_first_and_evacuated_within_seconds(
        engine, nova, host, peer, monitors):
    servers = [nova.add_server(host) for _ in range(2)]
    m = monitors(force_down=True)
    nid, t0 = fail_host(engine, nova, m, host)
    # Nova: forced down by us first, then the engine's disable, then every instance moved;
    # no evacuate refused ("still in use"), none waited for service_down_time.
    updates = nova.service_updates(host)
    assert updates[0] == {"forced_down": True}
    assert updates[1]["status"] == "disabled"
    assert updates[1]["disabled_reason"] == MASAKARI_HOST_FAILED
    evacuations = nova.calls(host=host, action="evacuate")
    assert {c.status for c in evacuations} == {200}
    assert sorted(c.server for c in evacuations) == sorted(servers)
    # rebuilt elsewhere (the stand-in picks any enabled, up host: other tests' hosts too)
    assert all(nova.server(s)["OS-EXT-SRV-ATTR:host"] not in (host, None) for s in servers)
    first = min(c.time for c in evacuations)
    # Seconds, not service_down_time (60 s) + wait_period_after_service_update (180 s):
    # here ~0.2 s to the force-down, ~1.5 s to the 202, then the engine's own pace (~3 s
    # to its first Nova call, the 1 s wait, listing and locking) on a busy 2-core VM.
    assert first - t0 < 15.0, f"first evacuate {first - t0:.1f}s after the verdict"
    forced = nova.calls(host=host, method="PUT")[0].time
    assert forced - t0 < 2.0, f"forced down {forced - t0:.1f}s after the verdict"
    # The outbox: force-down answered before the Masakari delivery was even attempted.
    row = ReadModel(m.box).get(nid)
    seen = [(h["kind"], h.get("driver")) for h in row["history"]
            if h["kind"] in ("attempt", "answer")]
    assert seen[:3] == [("attempt", actions.FORCE_DOWN), ("answer", actions.FORCE_DOWN),
                        ("attempt", "masakari")]
    assert "fencing confirmed" in row["decision"]["actions"][actions.FORCE_DOWN]
    assert engine.api.host(host)["on_maintenance"] is True


def test_a_host_not_confirmed_fenced_is_never_forced_down(engine, nova, host, peer, monitors):
    server = nova.add_server(host)
    m = monitors(force_down=True, resurrect=True)
    nid = m.emit(payloads.stopped(host, fenced=False),
                 decision={"fencing": "no confirmation within stonith_wait"}).id
    row = m.settled(nid)
    assert [d["driver"] for d in row["deliveries"]] == ["masakari"]
    remote = row["deliveries"][0]["remote_id"]
    assert engine.wait_final(remote)["status"] == "ignored"
    back = m.settled(m.emit(payloads.started(host)).id)
    assert actions.RESURRECT not in [d["driver"] for d in back["deliveries"]]
    assert nova.mutations(host) == []           # no PUT, no server action at all
    assert nova.service(host)["forced_down"] is False
    assert nova.server(server)["OS-EXT-SRV-ATTR:host"] == host


def test_the_force_down_driver_refuses_anything_but_a_fenced_host(engine, nova, host):
    conf = recovery_conf(engine.api.workdir / "unused", engine.api, force_down=True)
    driver = drivers.load(conf, [actions.FORCE_DOWN])[actions.FORCE_DOWN]
    since = time.time()
    for note in (payloads.stopped(host, fenced=False), payloads.started(host),
                 Notification.create(PROCESS, host, {"event": "STOPPED",
                                                     "process_name": "nova-compute"})):
        answer = driver.send(note)
        assert answer.outcome == "rejected" and "refused" in answer.message
    assert nova.calls(host=host, since=since) == []   # not even a lookup
    driver.close()


def test_a_recovered_host_is_back_in_service_without_a_person(
        engine, nova, host, peer, monitors, caplog):
    nova.add_server(host)
    m = monitors(force_down=True, resurrect=True)
    fail_host(engine, nova, m, host)
    assert nova.service(host)["status"] == "disabled"
    # The host was repaired and rebooted: its nova-compute reports again, the cluster sees
    # it online and the peer source reports it STARTED.
    nova.set_service(host, state="up")
    caplog.set_level(logging.WARNING, logger="monitors.drivers.resurrect")
    nid = m.emit(payloads.started(host), decision={"driver": "test"}).id
    row = m.settled(nid)
    assert {d["driver"]: d["state"] for d in row["deliveries"]} == {
        "masakari": "delivered", actions.RESURRECT: "delivered"}
    service = nova.service(host)
    assert (service["status"], service["forced_down"]) == ("enabled", False)
    assert engine.api.host(host)["on_maintenance"] is False
    answer = next(h for h in row["history"]
                  if h["kind"] == "answer" and h["driver"] == actions.RESURRECT)
    for step in ("taken off maintenance", "forced_down cleared", "enabled again"):
        assert step in answer["message"]
    journal = [r.journal_fields["ACTION"] for r in caplog.records
               if r.name == "monitors.drivers.resurrect"]
    assert journal == ["resurrect:maintenance-off", "resurrect:unforce", "resurrect:enable"]
    # Back in service for Masakari too: a new failure on this host is accepted (202, not
    # 409 "under maintenance") and recovered.
    server = nova.add_server(host)
    vm = Notification.create("VM", host, {"event": "LIFECYCLE", "instance_uuid": server,
                                          "vir_domain_event": "STOPPED_FAILED"})
    row = m.settled(m.emit(vm).id)
    assert row["deliveries"][0]["last_status"] == 202
    assert engine.wait_final(row["deliveries"][0]["remote_id"])["status"] == "finished"
    assert [a for _, a, _ in nova.actions(host)][-2:] == ["os-stop", "os-start"]


def test_an_operator_disable_is_never_undone(engine, nova, host, peer, monitors):
    nova.add_server(host)
    m = monitors(force_down=True, resurrect=True)
    fail_host(engine, nova, m, host)
    # A person takes over: the host needs a new disk before it may run instances again.
    nova.set_service(host, disabled_reason="ops: replace disk sdb (ticket 4711)")
    nova.set_service(host, state="up")
    nid = m.emit(payloads.started(host)).id
    row = m.answered(nid, actions.RESURRECT)
    service = nova.service(host)
    assert service["status"] == "disabled"
    assert service["disabled_reason"] == "ops: replace disk sdb (ticket 4711)"
    assert service["forced_down"] is False   # ours, and the host is up: cleared
    assert engine.api.host(host)["on_maintenance"] is True
    assert not any(b.get("status") == "enabled" for b in nova.service_updates(host))
    answer = next(h for h in row["history"]
                  if h["kind"] == "answer" and h["driver"] == actions.RESURRECT)
    assert "left disabled" in answer["message"] and "ticket 4711" in answer["message"]
    # The STARTED itself waits, held, while the host is on maintenance (visible, not lost),
    # and goes once the operator takes the host off maintenance.
    time.sleep(2.0)
    held = next(d for d in ReadModel(m.box).get(nid)["deliveries"] if d["driver"] == "masakari")
    assert held["state"] == "pending" and "maintenance" in held["last_message"]
    engine.api.set_maintenance(host, False)
    assert m.settled(nid)["deliveries"][0]["state"] == "delivered"


def test_a_process_failure_that_recovered_is_back_in_service(engine, nova, host, monitors):
    m = monitors(resurrect=True)

    def proc(event):
        return Notification.create(PROCESS, host, {"event": event,
                                                   "process_name": "nova-compute"})
    stopped = m.settled(m.emit(proc("STOPPED")).id)
    assert engine.wait_final(stopped["deliveries"][0]["remote_id"])["status"] == "finished"
    assert nova.service(host)["disabled_reason"] == "Masakari detected process failed."
    assert engine.api.host(host)["on_maintenance"] is True
    row = m.settled(m.emit(proc("STARTED")).id)
    assert {d["driver"] for d in row["deliveries"]} == {"masakari", actions.RESURRECT}
    assert nova.service(host)["status"] == "enabled"
    assert engine.api.host(host)["on_maintenance"] is False
    assert not any("forced_down" in b for b in nova.service_updates(host))


def test_an_operators_maintenance_is_never_undone(engine, nova, host, monitors):
    """A person put the host on maintenance (service enabled); a nova-compute blip comes
    and goes meanwhile: resurrect runs, and leaves the maintenance alone."""
    uuid = engine.api.host_uuid(host)
    for s in engine.api._call("GET", "/segments")["segments"]:
        engine.api.request("PUT", f"/segments/{s['uuid']}/hosts/{uuid}",
                           {"host": {"on_maintenance": True}})
    assert engine.api.host(host)["on_maintenance"] is True
    m = monitors(resurrect=True)

    def proc(event):
        return Notification.create(PROCESS, host, {"event": event,
                                                   "process_name": "nova-compute"})
    m.emit(proc("STOPPED"))
    nid = m.emit(proc("STARTED")).id
    row = m.answered(nid, actions.RESURRECT)
    answer = next(h for h in row["history"]
                  if h["kind"] == "answer" and h["driver"] == actions.RESURRECT)
    assert "left on maintenance" in answer["message"]
    assert engine.api.host(host)["on_maintenance"] is True
    assert nova.mutations(host) == []
