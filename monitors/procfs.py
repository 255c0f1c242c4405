"""What the daemons read from /proc, parsed in one place.

``ROOT`` is the procfs mount (tests point it at a fake tree). A pid alone is ambiguous
(pids are recycled), so owners of leases and status files are named ``pid:starttime``.
"""
from __future__ import annotations

import os
import time

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


def comm(pid: int, root: str | None = None) -> str:
    try:
        with open(f"{root or ROOT}/{pid}/comm", "rb") as f:
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def process_identity(pid: int | None = None, root: str | None = None) -> str:
    """pid plus its start time, so a recycled pid is not mistaken for the old owner."""
    pid = pid or os.getpid()
    fields = stat_fields(pid, root)
    start = fields[19] if fields and len(fields) > 19 else "?"
    return f"{pid}:{start}"


def owner_alive(owner: str, root: str | None = None) -> bool:
    """Whether the process a lease or status file names (``pid:starttime``) still runs
    (a zombie does not)."""
    try:
        pid = int(owner.split(":", 1)[0])
    except ValueError:
        return False
    fields = stat_fields(pid, root)
    if not fields or fields[0] == "Z":
        return False
    return process_identity(pid, root) == owner
