"""Real QEMU/TCG guests under a libvirtd with the QEMU driver (private mount namespace):
the failures Masakari acts on, produced for real and stored by the real API."""
from __future__ import annotations

import os
import signal
import time
import uuid as uuidlib

import pytest

from tests.fixtures.libvirtd import QemuLibvirtd, qemu_available
from tests.helpers import Daemon, wait_for, write_conf
from tests.instancemonitor.conftest import vm_events, vm_sent

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not qemu_available(), reason="qemu-system-x86 not installed")]

GUEST = """<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator><memballoon model='none'/></devices>
  {extra}
</domain>"""
# A disk behind QEMU's blkdebug driver failing every read with EIO; SeaBIOS reads its boot
# sector at once. libvirt has no blkdebug syntax, hence qemu:commandline.
BAD_DISK = """<qemu:commandline>
  <qemu:arg value='-drive'/>
  <qemu:arg value='if=none,id=baddisk,format=raw,werror=report,rerror=report,file.driver=blkdebug,file.config={dir}/blkdebug.conf,file.image.filename={dir}/disk.raw'/>
  <qemu:arg value='-device'/><qemu:arg value='virtio-blk-pci,drive=baddisk,bootindex=1,addr=0x9'/>
</qemu:commandline>"""


@pytest.fixture(scope="module")
def qemu_libvirtd(tmp_path_factory):
    work = tmp_path_factory.mktemp("qemu-libvirtd")
    d = QemuLibvirtd(work)
    d.start()
    yield d
    d.stop()


@pytest.fixture
def guest_daemon(qemu_libvirtd, masakari_api, tmp_path, host):
    state = tmp_path / "state"
    state.mkdir()
    conf = write_conf(tmp_path / "monitors.conf", hostname=host, state_path=state,
                      endpoint=masakari_api.endpoint,
                      sections={"libvirt": {"connection_uri": qemu_libvirtd.uri}})
    with Daemon("instancemonitor", conf) as daemon:
        yield daemon


def _guest(libvirtd, name, extra=""):
    conn = libvirtd.hold()
    dom = conn.defineXML(GUEST.format(name=name, uuid=uuidlib.uuid4(), extra=extra))
    dom.create()
    return dom


def test_qemu_killed_is_stopped_failed(qemu_libvirtd, guest_daemon, masakari_api, host):
    dom = _guest(qemu_libvirtd, "g-kill")
    try:
        os.kill(qemu_libvirtd.qemu_pid("g-kill"), signal.SIGKILL)
        wanted = ("LIFECYCLE", dom.UUIDString(), "STOPPED_FAILED")
        # generous bound: under a loaded 2-core CI machine TCG and the API are slow
        wait_for(lambda: wanted in vm_events(masakari_api, host), 45,
                 what="STOPPED_FAILED stored")
        assert vm_events(masakari_api, host) == [wanted]
    finally:
        dom.undefine()


def test_blkdebug_io_error_is_reported(qemu_libvirtd, guest_daemon, masakari_api, host,
                                       tmp_path):
    (tmp_path / "disk.raw").write_bytes(b"\0" * (1 << 20))
    (tmp_path / "blkdebug.conf").write_text('[inject-error]\nevent = "read_aio"\nerrno = "5"\n')
    dom = _guest(qemu_libvirtd, "g-io", BAD_DISK.format(dir=tmp_path))
    try:
        wanted = ("IO_ERROR", dom.UUIDString(), "IO_ERROR_REPORT")
        wait_for(lambda: wanted in vm_events(masakari_api, host), 20,
                 what="IO_ERROR_REPORT stored")
    finally:
        dom.destroy()
        dom.undefine()


AGENT_CHANNEL = """<devices><channel type='unix'>
  <target type='virtio' name='org.qemu.guest_agent.0'/></channel></devices>"""


def test_guest_agent_silent_is_reported_once(qemu_libvirtd, masakari_api, tmp_path, host):
    """A real guest whose agent channel nobody answers (no guest OS here): after the
    threshold, one QEMU_GUEST_AGENT_ERROR / STOPPED_FAILED, not one per round, and not one
    more after the guest was stopped and started again (what the engine's recovery does)
    while its agent stays silent: counted as POSTed, a re-send would be a 409 the stored
    notifications do not show."""
    state = tmp_path / "state"
    state.mkdir()
    conf = write_conf(tmp_path / "monitors.conf", hostname=host, state_path=state,
                      endpoint=masakari_api.endpoint,
                      sections={"libvirt": {"connection_uri": qemu_libvirtd.uri},
                                "instancemonitor": {"guest_agent_heartbeat": "true"},
                                "introspectiveinstancemonitor": {
                                    "guest_monitoring_interval": 1,
                                    "guest_monitoring_timeout": 1,
                                    "guest_monitoring_failure_threshold": 2,
                                    "qemu_guest_agent_sock_path": ".*"}})
    xml = GUEST.replace("<devices>", AGENT_CHANNEL.replace("</devices>", ""), 1)
    conn = qemu_libvirtd.hold()
    dom = conn.defineXML(xml.format(name="g-agent", uuid=uuidlib.uuid4(), extra=""))
    dom.create()
    try:
        with Daemon("instancemonitor", conf):
            events = wait_for(lambda: vm_events(masakari_api, host), 15,
                              what="QEMU_GUEST_AGENT_ERROR stored")
            time.sleep(2.5)  # two more failed rounds: still only one notification
            assert vm_events(masakari_api, host) == events == [
                ("QEMU_GUEST_AGENT_ERROR", dom.UUIDString(), "STOPPED_FAILED")]
            dom.destroy()     # the engine's stop and start
            time.sleep(1.5)   # at least one round sees it stopped
            dom.create()
            time.sleep(4)     # past the threshold again, still silent
            assert [s[:3] for s in vm_sent(masakari_api, host)
                    if s[0] == "QEMU_GUEST_AGENT_ERROR"] == [
                ("QEMU_GUEST_AGENT_ERROR", dom.UUIDString(), "STOPPED_FAILED")]
    finally:
        dom.destroy()
        dom.undefine()
