"""The one /proc parser: the files as the kernel writes them (fake trees for the odd cases,
this machine's /proc for the real ones)."""
from __future__ import annotations

import os
import signal
import subprocess
import time

from monitors import procfs
from tests.helpers import wait_for

MOUNTINFO = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n"
    # ext4 after an error: the mount's options still say rw, the superblock emergency_ro
    "30 22 8:2 / /var/lib/nova rw,relatime shared:2 - ext4 /dev/sdb1 rw,emergency_ro\n"
    # a mount point with a space, a tab and a backslash, written as octal escapes
    r"31 22 0:40 / /mnt/a\040b\011c\134d rw - tmpfs tmp\040fs rw" "\n"
    "32 30 0:41 / /var/lib/nova/instances ro,nosuid master:3 - nfs4 srv:/export rw\n"
    "33 22 0:42 / /var/lib/nova/instances2 rw - tmpfs tmpfs rw\n"
    "garbage line without a separator\n"
    # the same point mounted again later: the last mount hides the first
    "34 22 0:43 / /mnt/over rw - tmpfs first rw\n"
    "35 22 0:44 / /mnt/over ro - tmpfs second rw\n"
)


def _tree(tmp_path, pid=1234, stat=None, status=None):
    (tmp_path / "self").mkdir(exist_ok=True)
    (tmp_path / "self" / "mountinfo").write_text(MOUNTINFO)
    d = tmp_path / str(pid)
    d.mkdir(exist_ok=True)
    if stat is not None:
        (d / "stat").write_bytes(stat)
    if status is not None:
        (d / "status").write_bytes(status)
    return str(tmp_path)


def test_mounts_unescape_union_the_options_and_skip_garbage(tmp_path):
    table = procfs.mounts(_tree(tmp_path))
    points = [m.point for m in table]
    assert points == ["/", "/var/lib/nova", "/mnt/a b\tc\\d", "/var/lib/nova/instances",
                      "/var/lib/nova/instances2", "/mnt/over", "/mnt/over"]
    spaced = table[2]
    assert spaced.source == "tmp fs"
    nova = table[1]
    assert nova.source == "/dev/sdb1" and {"rw", "relatime", "emergency_ro"} <= nova.options
    assert procfs.read_only(nova.options)          # emergency_ro although it says rw
    assert procfs.read_only(table[3].options)       # ro in the mount's own options
    assert not procfs.read_only(table[0].options)


def test_mount_of_is_the_longest_prefix_on_path_boundaries_and_the_last_mount(tmp_path):
    table = procfs.mounts(_tree(tmp_path))
    assert procfs.mount_of("/var/lib/nova/instances/x/disk", table).source == "srv:/export"
    # /var/lib/nova/instances2 is its own mount, not under .../instances
    assert procfs.mount_of("/var/lib/nova/instances2/y", table).source == "tmpfs"
    assert procfs.mount_of("/var/lib/nova/instancesX", table).source == "/dev/sdb1"
    assert procfs.mount_of("/var/lib/nova/../nova/z", table).source == "/dev/sdb1"
    assert procfs.mount_of("/etc/passwd", table).point == "/"
    assert procfs.mount_of("/mnt/over/f", table).source == "second"
    assert procfs.mount_of("/x", []) is None


def test_unreadable_mountinfo_is_an_empty_table(tmp_path):
    assert procfs.mounts(str(tmp_path / "nowhere")) == []


def test_stat_fields_survive_a_command_name_with_parentheses_and_spaces(tmp_path):
    # the name is the only free-form field: everything after its last ')' is parsed
    fields = " ".join(["T", "1", "1234", "1234", "0", "-1", "0", "0", "0", "0", "0",
                       "70", "30"] + ["0"] * 6 + ["987654"])
    root = _tree(tmp_path, stat=f"1234 (nova) (x) y) {fields}\n".encode(),
                 status=b"Name:\tnova\nvoluntary_ctxt_switches:\t5\n"
                        b"nonvoluntary_ctxt_switches:\t2\n")
    assert procfs.ppid_state(1234, root) == (1, "T")
    assert procfs.stat_fields(1234, root)[19] == "987654"
    assert procfs.liveness(1234, root) == ("T", 100, 7)
    assert procfs.liveness(99, root) is None and procfs.ppid_state(99, root) is None


def test_liveness_of_a_real_process_stops_moving_when_it_is_stopped():
    proc = subprocess.Popen(["python3", "-c", "while True: pass"])
    try:
        wait_for(lambda: (s := procfs.liveness(proc.pid)) and s[1] > 0, 10,
                 what="CPU time counted")
        running = procfs.liveness(proc.pid)
        assert running[0] not in procfs.FROZEN_STATES
        os.kill(proc.pid, signal.SIGSTOP)
        wait_for(lambda: procfs.liveness(proc.pid)[0] == "T", 10, what="state T")
        first = procfs.liveness(proc.pid)
        time.sleep(0.3)
        assert procfs.liveness(proc.pid) == first  # stopped: nothing moves
        assert first[1] >= running[1] and first[2] >= running[2]
        os.kill(proc.pid, signal.SIGCONT)
        wait_for(lambda: procfs.liveness(proc.pid)[1] > first[1], 10, what="CPU time again")
    finally:
        proc.kill()
        proc.wait()
    assert procfs.liveness(proc.pid) is None


def test_pid_namespace_tells_this_namespace_from_a_missing_process():
    assert procfs.pid_namespace() == procfs.pid_namespace(os.getpid())
    assert procfs.pid_namespace() is not None
    assert procfs.pid_namespace(2 ** 22 + 7) is None
