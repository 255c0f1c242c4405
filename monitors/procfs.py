"""What the daemons read from /proc, parsed in one place.

``ROOT`` is the procfs mount (tests point it at a fake tree). Whether the owner of a lease
or a status file still runs is not read here: a pid means something else in another PID
namespace (one container per monitor); monitors/owners.py judges by a lock instead.
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


def pid_namespace(pid: int | str = "self", root: str | None = None) -> int | None:
    """The inode of a process's PID namespace (None when unreadable): two processes see
    the same pids iff they are in the same one (containers often are not)."""
    try:
        return os.stat(f"{root or ROOT}/{pid}/ns/pid").st_ino
    except OSError:
        return None
