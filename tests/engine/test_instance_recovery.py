"""Real QEMU guests, the real ha-instancemonitor and masakari-engine.

- The guest dies (SIGKILL of its qemu process): LIFECYCLE STOPPED_FAILED, the engine stops
  and starts the instance through Nova exactly once.
- The guest panics (a pvpanic device, triggered from QEMU's monitor: `o 0x505 1`, what the
  guest kernel writes on panic): CRASHED_PANICKED + STOPPED_CRASHED, which the engine
  records and ignores — unless the operator's event filter maps them to STOPPED_FAILED.

The recording Nova's os-start starts the real domain again (what Nova's compute agent would
do), so a restarted guest is running at the end."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid as uuidlib
from pathlib import Path

import pytest

from tests.engine.node import settle
from tests.fixtures.libvirtd import QemuLibvirtd, qemu_available
from tests.helpers import Daemon, wait_for, write_conf

pytestmark = pytest.mark.skipif(not qemu_available(), reason="qemu-system-x86 not installed")

GUEST = """<domain type='qemu'>
  <name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os><on_crash>destroy</on_crash>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator><memballoon model='none'/>
    <panic model='isa'><address type='isa' iobase='0x505'/></panic></devices>
</domain>"""
PANIC_MAP = """map:
  LIFECYCLE:
    CRASHED_PANICKED: STOPPED_FAILED
    STOPPED_CRASHED: STOPPED_FAILED
"""


@pytest.fixture(scope="module")
def qemu_libvirtd(tmp_path_factory):
    d = QemuLibvirtd(tmp_path_factory.mktemp("engine-qemu"))
    d.start()
    yield d
    d.stop()


@pytest.fixture
def guest(qemu_libvirtd, nova, engine, tmp_path):
    """A running QEMU guest on a fresh host, known to Nova (HA_Enabled) by its UUID; Nova's
    os-start starts the domain again."""
    from tests.engine.conftest import new_host

    host = new_host(engine, "qemu")
    name = f"g-{os.getpid()}-{uuidlib.uuid4().hex[:6]}"
    conn = qemu_libvirtd.hold()
    dom = conn.defineXML(GUEST.format(name=name, uuid=uuidlib.uuid4()))
    dom.create()
    server = nova.add_server(host, server_id=dom.UUIDString(), name=name)

    def start_domain(server_id, action, body):
        if server_id == server and action == "os-start" and not dom.isActive():
            dom.create()
    nova.on_action(start_domain)
    yield host, name, dom, server
    try:
        if dom.isActive():
            dom.destroy()
    finally:
        dom.undefine()


def instancemonitor(tmp_path, engine, host, uri, **sections):
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    conf = write_conf(tmp_path / "im.conf", hostname=host, state_path=state,
                      endpoint=engine.api.endpoint,
                      sections={"libvirt": {"connection_uri": uri}, **sections})
    return Daemon("instancemonitor", conf).start()


def vm_rows(engine, host):
    return engine.api.notifications(type="VM", hostname=host)


def test_qemu_killed_instance_is_restarted_exactly_once(
        qemu_libvirtd, guest, engine, nova, tmp_path, record):
    host, name, dom, server = guest
    d = instancemonitor(tmp_path, engine, host, qemu_libvirtd.uri)
    try:
        os.kill(qemu_libvirtd.qemu_pid(name), signal.SIGKILL)
        failed = wait_for(lambda: [r for r in vm_rows(engine, host)
                                   if r["payload"]["vir_domain_event"] == "STOPPED_FAILED"],
                          60, interval=0.3, what="STOPPED_FAILED stored")
        done = engine.wait_final(failed[0]["notification_uuid"])
        wait_for(lambda: dom.isActive(), 20, what="domain running again")
        settle(3)  # the restart's own events reach the engine too
        for row in vm_rows(engine, host):
            engine.wait_final(row["notification_uuid"])
        rows = record(engine, host, note="QEMU kill -9 (instancemonitor)")
    finally:
        d.stop()
        d.notify.close()
    assert done["status"] == "finished"
    assert done["payload"] == {"instance_uuid": server, "vir_domain_event": "STOPPED_FAILED",
                               "event": "LIFECYCLE"}
    assert nova.actions(host) == [(server, "os-stop", 202), (server, "os-start", 202)]
    assert nova.service_updates(host) == []
    assert nova.server(server)["OS-EXT-STS:vm_state"] == "active"
    # what the restart itself produced (e.g. STARTED_BOOTED) is recorded and ignored
    others = [r for r in rows[0]["notifications"]
              if r[1]["vir_domain_event"] != "STOPPED_FAILED"]
    assert all(status == "ignored" for _, _, status in others)
    assert len(rows[0]["notifications"]) - len(others) == 1


def panic(dom) -> None:
    """What a guest kernel does on panic with a pvpanic device: write 1 to its port."""
    import libvirt_qemu

    libvirt_qemu.qemuMonitorCommand(dom, "o /b 0x505 1",
                                    libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)


def test_guest_panic_is_recorded_and_ignored_by_default(
        qemu_libvirtd, guest, engine, nova, tmp_path, record):
    host, name, dom, server = guest
    d = instancemonitor(tmp_path, engine, host, qemu_libvirtd.uri)
    try:
        panic(dom)
        rows = wait_for(lambda: (lambda r: r if len(r) >= 2 else None)(vm_rows(engine, host)),
                        60, interval=0.3, what="CRASHED_PANICKED + STOPPED_CRASHED stored")
        for row in rows:
            engine.wait_final(row["notification_uuid"])
        settle(2)
        rec = record(engine, host, note="guest panic, default event filter")[0]
    finally:
        d.stop()
        d.notify.close()
    assert [(p["vir_domain_event"], status) for _, p, status in rec["notifications"]] == [
        ("CRASHED_PANICKED", "ignored"), ("STOPPED_CRASHED", "ignored")]
    assert nova.mutations(host) == []
    assert not dom.isActive()  # nobody restarted it: what an operator must know


def test_guest_panic_mapped_to_stopped_failed_is_restarted_once(
        qemu_libvirtd, guest, engine, nova, tmp_path, record):
    """[instancemonitor] event_filter_file with a map: the panic goes out as STOPPED_FAILED
    (both of its events: the API answers the second as a duplicate), the engine restarts
    the instance exactly once, the outbox history says what was mapped."""
    host, name, dom, server = guest
    filt = tmp_path / "filter.yaml"
    filt.write_text(PANIC_MAP)
    d = instancemonitor(tmp_path, engine, host, qemu_libvirtd.uri,
                        instancemonitor={"event_filter_file": filt})
    try:
        panic(dom)
        failed = wait_for(lambda: vm_rows(engine, host), 60, interval=0.3,
                          what="mapped STOPPED_FAILED stored")
        done = engine.wait_final(failed[0]["notification_uuid"])
        wait_for(lambda: dom.isActive(), 20, what="domain running again")
        settle(3)
        rec = record(engine, host, note="guest panic, filter maps it to STOPPED_FAILED")[0]
        history = subprocess.run(
            [str(Path(sys.executable).parent / "ha-monitors"), "--config-file", str(d.conf),
             "history", "--type", "VM"], capture_output=True, text=True, timeout=60).stdout
    finally:
        d.stop()
        d.notify.close()
    assert done["status"] == "finished"
    assert done["payload"]["vir_domain_event"] == "STOPPED_FAILED"
    assert [(p["vir_domain_event"], status) for _, p, status in rec["notifications"]] == [
        ("STOPPED_FAILED", "finished")]
    assert nova.actions(host) == [(server, "os-stop", 202), (server, "os-start", 202)]
    assert "LIFECYCLE/CRASHED_PANICKED" in history and f"{filt}:3" in history


AGENT_GUEST = GUEST.replace(
    "<devices>", "<devices><channel type='unix'>"
    "<target type='virtio' name='org.qemu.guest_agent.0'/></channel>", 1)


def test_a_frozen_guest_agent_gets_the_instance_restarted_once(
        qemu_libvirtd, engine, nova, tmp_path):
    """A real guest whose guest-agent channel stops answering (here: nobody ever answers
    it, there is no guest OS; to the heartbeat that is a frozen guest): after
    guest_monitoring_failure_threshold rounds, one QEMU_GUEST_AGENT_ERROR/STOPPED_FAILED,
    and the real engine stops and starts the instance once. The restarted guest still does
    not answer: no second notification until a ping succeeds (no restart loop)."""
    from tests.engine.conftest import new_host

    host = new_host(engine, "agent")
    name = f"ga-{os.getpid()}-{uuidlib.uuid4().hex[:6]}"
    conn = qemu_libvirtd.hold()
    dom = conn.defineXML(AGENT_GUEST.format(name=name, uuid=uuidlib.uuid4()))
    dom.create()
    server = nova.add_server(host, server_id=dom.UUIDString(), name=name)

    def start_domain(server_id, action, body):
        if server_id == server and action == "os-start" and not dom.isActive():
            dom.create()
    nova.on_action(start_domain)
    d = instancemonitor(tmp_path, engine, host, qemu_libvirtd.uri,
                        instancemonitor={"guest_agent_heartbeat": "true"},
                        introspectiveinstancemonitor={
                            "guest_monitoring_interval": 1, "guest_monitoring_timeout": 1,
                            "guest_monitoring_failure_threshold": 2,
                            "qemu_guest_agent_sock_path": ".*"})
    try:
        rows = wait_for(lambda: [r for r in vm_rows(engine, host)
                                 if r["payload"]["event"] == "QEMU_GUEST_AGENT_ERROR"],
                        60, interval=0.3, what="QEMU_GUEST_AGENT_ERROR stored")
        done = engine.wait_final(rows[0]["notification_uuid"])
        wait_for(lambda: len(nova.actions(host)) >= 2 and dom.isActive(), 30,
                 what="instance stopped and started")
        settle(6)  # six more heartbeat rounds against the restarted, still silent guest
        posts = [p.status for p in engine.api.posts(hostname=host)
                 if p.payload.get("event") == "QEMU_GUEST_AGENT_ERROR"]
    finally:
        d.stop()
        d.notify.close()
        try:
            if dom.isActive():
                dom.destroy()
        finally:
            dom.undefine()
    assert done["status"] == "finished"
    assert done["payload"] == {"instance_uuid": server, "event": "QEMU_GUEST_AGENT_ERROR",
                               "vir_domain_event": "STOPPED_FAILED"}
    assert nova.actions(host) == [(server, "os-stop", 202), (server, "os-start", 202)]
    assert posts == [202]  # POSTed once
