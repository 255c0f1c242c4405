"""Storage checks: a hung mount (a bindfs FUSE filesystem whose server is SIGSTOPped, so
every stat on it blocks in the kernel like a dead NFS server) makes storage down without
hanging the daemon; the mount answering again sends STARTED."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from tests.helpers import wait_for
from tests.hostmonitor.test_links import STARTED, STOPPED, start, wait_payloads


@pytest.fixture
def fuse_mount(tmp_path):
    if not shutil.which("bindfs"):
        pytest.fail("bindfs is not installed (deps/apt.txt)")
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    proc = subprocess.Popen(["bindfs", "-f", "-o", "attr_timeout=0,entry_timeout=0",
                             str(src), str(mnt)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for(lambda: os.path.ismount(mnt), 10, what="bindfs mounted")
    yield proc, mnt
    proc.send_signal(signal.SIGCONT)
    subprocess.run(["fusermount", "-u", str(mnt)], capture_output=True, timeout=10)
    proc.terminate()
    proc.wait(5)


@pytest.mark.slow
def test_hung_mount_is_storage_down_without_hanging(links_up, tmp_path, fuse_mount):
    topo = links_up
    proc, mnt = fuse_mount
    host = topo.new_host()
    d = start(topo, tmp_path, host, storage_paths=str(mnt), storage_heartbeat="true",
              storage_check_timeout=1.0, storage_check_interval=0.5)
    try:
        time.sleep(1.0)
        assert "storage: up" not in d.log_text()
        assert (mnt / f".ha-hostmonitor-{host}").exists()  # heartbeat written and read
        proc.send_signal(signal.SIGSTOP)  # the file server stops answering
        wait_payloads(topo, host, [STOPPED], timeout=15)
        assert "no answer within 1s (hung mount?)" in d.log_text()
        topo.admin("t0", "down")  # the daemon still reacts to everything else at once
        wait_for(lambda: "tenant: up -> degraded" in d.log_text(), 3, what="tenant event")
        topo.admin("t0", "up")
        proc.send_signal(signal.SIGCONT)
        wait_payloads(topo, host, [STOPPED, STARTED], timeout=15)
    finally:
        proc.send_signal(signal.SIGCONT)
        assert d.stop() == 0


def _sysfs(root, kind, name, attr, value, **extra):
    d = root / "class" / kind / name
    d.mkdir(parents=True)
    (d / attr).write_text(value + "\n")
    for key, val in extra.items():
        (d / key).write_text(val + "\n")


def test_iscsi_and_fc_states_from_sysfs(tmp_path):
    # No iSCSI/FC hardware here: the kernel's sysfs layout is reproduced in a directory.
    from hostmonitor.storage import SysfsCheck

    _sysfs(tmp_path, "iscsi_session", "session1", "state", "LOGGED_IN",
           targetname="iqn.2024-01.org.example:vol1")
    _sysfs(tmp_path, "iscsi_session", "session2", "state", "FAILED")
    _sysfs(tmp_path, "fc_host", "host0", "port_state", "Online")
    _sysfs(tmp_path, "fc_host", "host1", "port_state", "Linkdown")
    root = str(tmp_path)
    assert SysfsCheck("iscsi", ["iqn.2024-01.org.example:vol1"], root).run().state == "up"
    r = SysfsCheck("iscsi", ["session1", "session2"], root).run()
    assert (r.state, r.detail) == ("degraded", "session2=FAILED")
    assert SysfsCheck("iscsi", ["session2", "session9"], root).run().state == "down"
    assert SysfsCheck("fc", ["host0"], root).run().state == "up"
    r = SysfsCheck("fc", ["host1"], root).run()
    assert (r.state, r.detail) == ("down", "host1=Linkdown")


def test_mount_check_of_missing_path_is_down(tmp_path):
    from hostmonitor.storage import MountCheck

    assert MountCheck(str(tmp_path), 2.0, ".beat").run().state == "up"
    r = MountCheck(str(tmp_path / "nope"), 2.0, None).run()
    assert r.state == "down" and "FileNotFoundError" in r.detail


def test_heartbeat_never_writes_through_a_planted_symlink(tmp_path):
    """The storage path is shared and we run as root: someone plants a symlink at the
    heartbeat's name pointing at a file they want overwritten. The check replaces the
    link by its own file and leaves the target alone."""
    from hostmonitor.storage import MountCheck

    shared = tmp_path / "shared"
    shared.mkdir()
    victim = tmp_path / "etc-shadow-stand-in"
    victim.write_text("root:precious\n")
    (shared / ".beat").symlink_to(victim)
    r = MountCheck(str(shared), 5.0, ".beat").run()
    assert r.state == "up", r.detail
    assert victim.read_text() == "root:precious\n"
    beat = shared / ".beat"
    assert not beat.is_symlink() and beat.is_file()
    assert float(beat.read_text()) > time.time() - 60
    # a symlink at the temporary name (pid guessed) is removed, not followed, either
    assert MountCheck(str(shared), 5.0, ".beat").run().state == "up"
    assert sorted(p.name for p in shared.iterdir()) == [".beat"]
