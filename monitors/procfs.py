"""What the daemons read from /proc, parsed in one place.

``ROOT`` is the procfs mount (tests point it at a fake tree). Whether the owner of a lease
or a status file still runs is not read here: a pid means something else in another PID
namespace (one container per monitor); monitors/owners.py judges by a lock instead.
Nothing here stats or opens a path a process or mount names (only /proc's own files and
readlink): a hung mount never blocks a daemon reading about it.
"""
from __future__ import annotations

import os
import re
import time
from typing import NamedTuple

ROOT = "/proc"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def boot_clock() -> float:
    """Seconds since boot, counting suspend; never steps (unlike time.time())."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def boot_id(path: str = BOOT_ID_PATH) -> str:
    """This boot's random id ("?" when unreadable): tells a reboot from a restart."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "?"


BOOT_ID = boot_id()


def stat_fields(pid: int, root: str | None = None) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]; field 19 is
    the start time. None when the process is gone."""
    try:
        with open(f"{root or ROOT}/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].decode("ascii", "replace").split()


def ppid_state(pid: int, root: str | None = None) -> tuple[int, str] | None:
    """(parent pid, state letter), or None when the process is gone."""
    fields = stat_fields(pid, root)
    if not fields or len(fields) < 2:
        return None
    return int(fields[1]), fields[0]


# Task states in which a process does no work: stopped (SIGSTOP, SIGTSTP), stopped by a
# tracer, or asleep uninterruptibly (hung storage, a stuck kernel lock). A healthy process
# passes through them (a short read is "D" for milliseconds); only staying there, with no
# CPU time and no context switch, means it is frozen (processmonitor's freeze detection).
FROZEN_STATES = frozenset("TtD")


def liveness(pid: int, root: str | None = None) -> tuple[str, int, int] | None:
    """(state letter, CPU ticks of the whole process, context switches of its main
    thread), or None when the process is gone.

    Reads only /proc/<pid>/stat and /proc/<pid>/status, which never wait on the
    process's memory map lock (cmdline and environ do, and hang on a process stuck
    holding it): safe to read for a process stuck in "D". A frozen process keeps all
    three unchanged; one that merely passes through "D" or "T" changes the counts."""
    fields = stat_fields(pid, root)
    if not fields or len(fields) < 13:
        return None
    try:
        cpu = int(fields[11]) + int(fields[12])  # utime + stime (summed over all threads)
    except ValueError:
        return None
    switches = 0
    try:
        with open(f"{root or ROOT}/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith((b"voluntary_ctxt_switches:",
                                    b"nonvoluntary_ctxt_switches:")):
                    switches += int(line.split()[1])
    except (OSError, ValueError):
        return None
    return fields[0], cpu, switches


def argv(pid: int, root: str | None = None) -> list[str] | None:
    """The command line, or None for a kernel thread, a zombie or a gone process."""
    try:
        with open(f"{root or ROOT}/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    if not raw:
        return None
    return [a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0")]


def state(pid: int, root: str | None = None) -> str | None:
    """The state letter (R, S, D, Z, ...), or None when the process is gone."""
    fields = stat_fields(pid, root)
    return fields[0] if fields else None


def pids(root: str | None = None) -> list[int]:
    """Every process id /proc lists now."""
    return [int(e) for e in _listdir(root or ROOT) if e.isdigit()]


def open_paths(pid: int, root: str | None = None) -> list[str]:
    """What a (perhaps blocked) task has open: its cwd and fd targets (readlink never
    waits on the file; a blocked task's fds are still listed)."""
    base = f"{root or ROOT}/{pid}"
    out = []
    for link in [f"{base}/cwd"] + [f"{base}/fd/{n}" for n in _listdir(f"{base}/fd")]:
        try:
            out.append(os.readlink(link))
        except OSError:
            pass
    return out


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def comm(pid: int, root: str | None = None) -> str:
    try:
        with open(f"{root or ROOT}/{pid}/comm", "rb") as f:
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def pid_namespace(pid: int | str = "self", root: str | None = None) -> int | None:
    """The inode of a process's PID namespace (None when unreadable): two processes see
    the same pids iff they are in the same one (containers often are not)."""
    try:
        return os.stat(f"{root or ROOT}/{pid}/ns/pid").st_ino
    except OSError:
        return None


# -- mounts -----------------------------------------------------------------------------------
class Mount(NamedTuple):
    point: str           # where it is mounted, unescaped
    source: str          # the device (or server:/export, tmpfs, ...)
    options: set[str]    # per-mount and superblock options together


_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040)."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def mounts(root: str | None = None) -> list[Mount]:
    """Every mount this process sees, in mount order, from ``/proc/self/mountinfo`` ([]
    when unreadable). Options are the union of the mount's and the superblock's: a
    read-only filesystem shows ``ro`` in either, ext4's emergency read-only remount only
    ``emergency_ro`` in the superblock's (the list still starts with ``rw``)."""
    out = []
    try:
        with open(f"{root or ROOT}/self/mountinfo", encoding="utf-8",
                  errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                lf, rf = left.split(), right.split()
                if len(lf) < 6 or len(rf) < 3:
                    continue
                out.append(Mount(_unescape(lf[4]), _unescape(rf[1]),
                                 set(lf[5].split(",")) | set(rf[2].split(","))))
    except OSError:
        pass
    return out


def mount_of(path: str, table: list[Mount]) -> Mount | None:
    """The mount a path lives on (the last-mounted longest prefix). The path is compared as
    written, never resolved: a stat of a hung mount would block the daemon."""
    real = os.path.normpath(os.path.abspath(path))
    best = None
    for m in table:
        if real == m.point or real.startswith(m.point.rstrip("/") + "/"):
            if best is None or len(m.point) >= len(best.point):
                best = m
    return best


def read_only(options: set[str]) -> bool:
    """A mount's options say it is read-only (``ro``, or ext4's ``emergency_ro`` whose
    list keeps ``rw``)."""
    return "ro" in options or "emergency_ro" in options
