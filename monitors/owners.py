"""Who holds a lease, and whether it still runs, judged the same from any PID namespace.

Leases in the outbox (deliveries, recoveries) and the daemons' status files name their
owner. Several processes share one state_path: the three daemons under systemd, or one
container per monitor with state_path as a shared volume (kolla-ansible's shape). In the
second case each reads its own /proc: a pid (even with its start time) names another
process, or none, in another PID namespace, so a live owner looks dead (its lease is
taken and a row sent twice) and a dead one can look alive. The kernel, not /proc, is the
judge here:

- an owner holds an exclusive ``flock`` on ``<state_path>/owners/<owner>.lock`` for the
  whole life of the process; the kernel drops it when the process ends in any way
  (SIGKILL, OOM, a container stopped), whatever namespace it ran in. The file is made
  under a temporary name, locked, then renamed into place, so a lock file that exists
  unlocked belongs to an owner that is gone for good;
- an owner is alive iff its lock is held: a non-blocking shared attempt tells (shared, so
  that two readers judging the same owner at once never see each other as the owner).
  A reader that finds the lock free removes the file (the owner never comes back), and
  each new owner sweeps the files of owners gone. An owner never removes its own file
  while it runs, not even at exit: until the process has ended, a thread of it may still
  have a POST in flight, and its lease must hold.

Owner ids are ``<pid>-<16 hex digits>``: the pid (in the owner's own namespace) only for
the operator reading ``history``; the random part makes the id unique across namespaces
and restarts. Rows written before this (``pid:starttime``, the /proc judgement) cannot be
judged from another namespace: they count as alive, so their lease is respected until it
runs out (``[delivery] lease_seconds``), never taken early. That is safe in every layout
and costs at most one lease after an upgrade, for the rows an old process had in flight.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import socket
import stat
import threading
import time

from monitors import procfs

DIRNAME = "owners"
SUFFIX = ".lock"
_OWNER = re.compile(r"^[0-9]+-[0-9a-f]{16}$")
_LEGACY = re.compile(r"^[0-9]+:\S+$")  # pid:starttime, before owner locks
_TMP_AGE = 60.0  # a temporary file older than this, unlocked, was left by a crash

_lock = threading.Lock()
_held: dict[str, tuple[str, int]] = {}  # state directory -> (owner id, locked fd)
_pid = os.getpid()


class OwnerLockError(OSError):
    """The owner lock cannot be taken; the message names the directory and why."""


def directory(state_path: str) -> str:
    return os.path.join(os.path.abspath(state_path), DIRNAME)


def lock_path(state_path: str, owner: str) -> str:
    return os.path.join(directory(state_path), owner + SUFFIX)


def is_legacy(owner: str) -> bool:
    """A ``pid:starttime`` owner, written before owner locks."""
    return bool(_LEGACY.match(owner or ""))


def identity(state_path: str) -> str:
    """This process's owner id for ``state_path``, its lock taken on the first call
    (then the same id; a forked child gets its own). Raises OwnerLockError."""
    key = os.path.abspath(state_path)
    with _lock:
        if os.getpid() != _pid:
            _forget()
        held = _held.get(key)
        if held:
            return held[0]
        owner, fd = _take(key)
        _held[key] = (owner, fd)
    _sweep(key, owner)
    return owner


def alive(owner: str, state_path: str) -> bool:
    """Whether the process that ``owner`` names still runs, from any PID namespace that
    shares ``state_path``. Legacy ``pid:starttime`` owners and locks that cannot be
    tested count as alive (their lease runs out on its own); an id that is not an owner's
    (empty, garbage) as dead."""
    if is_legacy(owner):
        return True
    if not _OWNER.match(owner or ""):
        return False
    try:
        free = _free(lock_path(state_path, owner))
    except FileNotFoundError:
        return False  # removed by a reader that found it free: gone for good
    except OSError:
        return True  # cannot tell (permissions, no flock): do not take its lease early
    if free:
        with contextlib.suppress(OSError):
            os.unlink(lock_path(state_path, owner))
    return not free


def _free(path: str) -> bool:
    """Whether nobody holds the lock on ``path`` (raises OSError, FileNotFoundError
    when there is no such file)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _take(key: str) -> tuple[str, int]:
    where = directory(key)
    owner = f"{os.getpid()}-{secrets.token_hex(8)}"
    try:
        mode = _make_dir(key, where)
        tmp = os.path.join(where, f".{owner}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise OwnerLockError(exc.errno, f"cannot make the owner lock in {where}: "
                                        f"{exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a reader's test holds it for microseconds
        info = {"pid": os.getpid(), "pid_namespace": procfs.pid_namespace(),
                "host": socket.gethostname(), "started_at": time.time()}
        os.write(fd, (json.dumps(info) + "\n").encode())
        os.rename(tmp, os.path.join(where, owner + SUFFIX))
    except OSError as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OwnerLockError(exc.errno, f"cannot lock {where}/{owner}{SUFFIX} "
                                        f"(state_path must be on a filesystem with flock, "
                                        f"shared by every monitor): {exc.strerror}") from exc
    return owner, fd


def _make_dir(key: str, where: str) -> int:
    """The owners directory takes the state directory's group and mode (setgid 2770 with
    ``[DEFAULT] state_group``, so members can judge owners; else 0700). Returns the mode
    for lock files."""
    parent = os.stat(key)
    shared = bool(parent.st_mode & stat.S_ISGID)
    mode = 0o2770 if shared else 0o700
    try:
        os.mkdir(where, mode & 0o777)
    except FileExistsError:
        pass
    else:
        if shared:
            os.chmod(where, mode)
    return 0o640 if shared else 0o600


def _sweep(key: str, me: str) -> None:
    """Remove lock files of owners that are gone (each judged as any reader would), and
    temporary files left by a crash between create and lock."""
    where = directory(key)
    try:
        names = os.listdir(where)
    except OSError:
        return
    now = time.time()
    for name in names:
        if name.endswith(SUFFIX) and name[: -len(SUFFIX)] != me:
            alive(name[: -len(SUFFIX)], key)
        elif name.startswith(".") and name.endswith(".tmp"):
            path = os.path.join(where, name)
            with contextlib.suppress(OSError):
                if now - os.stat(path).st_mtime > _TMP_AGE and _free(path):
                    os.unlink(path)


def _forget() -> None:
    """In a forked child: the parent's locks are not ours (closing the inherited fds does
    not release them while the parent runs; it only stops the child from keeping them
    held after the parent died)."""
    global _pid, _lock
    _lock = threading.Lock()  # another thread may have held it at the fork
    for _, fd in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forget)
