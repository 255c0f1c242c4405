"""Real kernel faults for the kernel-log tests, the benchmark and the demo.

What this kernel (6.18, a microVM build: no modules, no device-mapper) can produce for real:
  * ext4 errors and the read-only remount: ext4 on a loop device mounted with
    errors=remount-ro, then ``/sys/fs/ext4/loopN/trigger_fs_error``;
  * an OOM kill: a process in a cgroup v1 memory child with memory.limit_in_bytes set,
    allocating past it; named qemu-system-x86_64 (a copy of the Python interpreter) with a
    ``-uuid`` on its command line as libvirt starts qemu;
  * a hung task: ext4 on a loop device whose backing file lives on a bindfs FUSE mount
    whose daemon is SIGSTOPped; a write into it blocks in D state and the hung-task
    detector reports it after ``hung_task_timeout_secs`` (lowered here, restored after).
What it cannot: machine checks (MCE) and EDAC memory errors (no such hardware or drivers),
oopses on demand, NIC driver resets (no NIC drivers: veth only) — those lines are injected
with writes to /dev/kmsg, which the reader cannot tell from the kernel's own.
Every name carries the pid; everything is undone by the context managers.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.helpers import wait_for

CGROUP_MEMORY = Path("/sys/fs/cgroup/memory")
_tags = itertools.count(1)


def tag() -> str:
    return f"{os.getpid()}-{next(_tags)}"


def inject(text: str, level: int = 3) -> None:
    """A record in the kernel log (for the classes this kernel cannot produce)."""
    fd = os.open("/dev/kmsg", os.O_WRONLY)
    try:
        os.write(fd, f"<{level}>{text}\n".encode())  # no newline: held as a continuation
    finally:
        os.close(fd)


@contextlib.contextmanager
def ext4_on_loop(workdir: Path, backing_dir: Path | None = None, size_mb: int = 16):
    """(mount point, loop device) of an ext4 mounted with errors=remount-ro."""
    t = tag()
    image = (backing_dir or workdir) / f"ext4-{t}.img"
    mnt = workdir / f"mnt-{t}"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                    str(image)], check=True, capture_output=True)
    dev = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                         capture_output=True, text=True).stdout.strip()
    try:
        subprocess.run(["mount", "-t", "ext4", "-o", "errors=remount-ro", dev, str(mnt)],
                       check=True, capture_output=True)
        try:
            yield mnt, dev
        finally:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)
        with contextlib.suppress(OSError):
            image.unlink()


def trigger_fs_error(dev: str) -> None:
    with open(f"/sys/fs/ext4/{os.path.basename(dev)}/trigger_fs_error", "w") as f:
        f.write("1")


def fake_qemu(workdir: Path) -> Path:
    """An executable whose comm is qemu-system-x86 (it is a copy of the interpreter)."""
    exe = workdir / "qemu-system-x86_64"
    if not exe.exists():
        shutil.copy2(os.path.realpath(sys.executable), exe)
    return exe


@contextlib.contextmanager
def memory_cgroup(limit_mb: int = 48):
    if not (CGROUP_MEMORY / "memory.limit_in_bytes").exists():
        raise RuntimeError("cgroup v1 memory controller not mounted at /sys/fs/cgroup/memory")
    cg = CGROUP_MEMORY / f"ha-kernel-test-{tag()}"
    cg.mkdir()
    try:
        (cg / "memory.limit_in_bytes").write_text(f"{limit_mb << 20}\n")
        yield cg
    finally:
        for pid in (cg / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        wait_for(lambda: not (cg / "cgroup.procs").read_text().strip(), 10,
                 what="cgroup empty")
        cg.rmdir()


_HOG = ("import sys, time\n"
        "sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.readline()\n"
        "a = []\n"
        "while True: a.append(bytearray(1 << 20))\n")


def start_qemu(workdir: Path, cgroup: Path, instance: str | None = None):
    """A 'qemu' in the cgroup, waiting on stdin to start eating memory; (proc, uuid)."""
    instance = instance or str(uuid.uuid4())
    exe = fake_qemu(workdir)
    proc = subprocess.Popen([str(exe), "-c", _HOG, "-name", "guest=instance-test",
                             "-uuid", instance], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: (cgroup / "cgroup.procs").write_text(
                                f"{os.getpid()}\n"))
    assert proc.stdout.readline().strip() == "ready"
    return proc, instance


def oom(proc) -> float:
    """Let the 'qemu' eat past the limit; returns the monotonic time it started to."""
    started = time.monotonic()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, proc.returncode
    return started


@contextlib.contextmanager
def sysctl(path: str, value: str):
    """A global sysctl, always restored."""
    p = Path("/proc/sys") / path
    old = p.read_text().strip()
    p.write_text(value)
    try:
        yield
    finally:
        p.write_text(old)


@contextlib.contextmanager
def frozen_fuse_ext4(workdir: Path):
    """ext4 on a loop device over a bindfs FUSE file; yields (mnt, dev, freeze, thaw)."""
    if not shutil.which("bindfs"):
        raise RuntimeError("bindfs is not installed (deps/apt.txt)")
    t = tag()
    src, fuse = workdir / f"fuse-src-{t}", workdir / f"fuse-{t}"
    src.mkdir()
    fuse.mkdir()
    daemon = subprocess.Popen(["bindfs", "-f", str(src), str(fuse)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.ismount(fuse), 10, what="bindfs mounted")
        with ext4_on_loop(workdir, backing_dir=fuse) as (mnt, dev):
            yield (mnt, dev, lambda: daemon.send_signal(signal.SIGSTOP),
                   lambda: daemon.send_signal(signal.SIGCONT))
            daemon.send_signal(signal.SIGCONT)
    finally:
        daemon.send_signal(signal.SIGCONT)
        subprocess.run(["fusermount", "-u", "-z", str(fuse)], capture_output=True)
        daemon.terminate()
        try:
            daemon.wait(5)
        except subprocess.TimeoutExpired:
            daemon.kill()
