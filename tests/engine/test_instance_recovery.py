"""A real QEMU guest dies (SIGKILL of its qemu process): ha-instancemonitor reports
LIFECYCLE STOPPED_FAILED, the real masakari-engine stops and starts the instance through
Nova exactly once. The recording Nova's os-start starts the real domain again (what Nova's
compute agent would do), so the guest is running at the end."""
from __future__ import annotations

import os
import signal
import uuid as uuidlib

import pytest

from tests.engine.node import settle
from tests.fixtures.libvirtd import QemuLibvirtd, qemu_available
from tests.helpers import Daemon, wait_for, write_conf

pytestmark = pytest.mark.skipif(not qemu_available(), reason="qemu-system-x86 not installed")

GUEST = """<domain type='qemu'>
  <name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator><memballoon model='none'/></devices>
</domain>"""


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
