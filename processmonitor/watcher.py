"""Which watched processes run: pidfds and the proc connector in one epoll, one thread.

Every matching pid gets a pidfd; the kernel makes it readable the moment the process
exits (a zombie counts as dead), so an exit is seen in well under a millisecond without
polling. New processes are picked up from the proc connector (exec and fork events) when
the kernel lets us subscribe (root, root network namespace); a psutil scan every
``check_interval`` seconds is the safety net and the fallback. The daemon never matches
itself or its own descendants (the commands it runs often name the process they start);
a match that was our descendant when it exec'd is kept as a candidate and looked at again
after our command returned (``after_command``), and on a short backoff (a process that
daemonized leaves our tree only when its transient parent exits): then it runs on its own.

A pid that is alive but frozen (stopped, traced, stuck in "D" for ``freeze_timeout``;
processmonitor/freeze.py, the one low-rate poll) stops counting as running: when no other
matching pid runs, "not running" is pushed (how ``frozen: ...``) and the worker kills it
(``kill_frozen``) and restarts it as it would a process that exited.

Every answer is pushed through ``on_change``, always from the watcher's thread (the
start-up and reload scans aside), so what a worker waits on changes in the order the
kernel reported it.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import struct
import threading
import time
from typing import Callable

import psutil

from monitors import procfs
from processmonitor.freeze import FreezeTracker
from processmonitor.process_list import ProcessEntry

LOG = logging.getLogger(__name__)

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
NLMSG_DONE = 3
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002

_NLMSG = struct.Struct("=IHHII")
_CNMSG = struct.Struct("=IIIIHH")
_EVENT = struct.Struct("=IIQ")

OWN_CANDIDATES = 1024  # matches started by our commands, waiting for them to return
# A candidate is looked at again after each of our commands returns, and on this backoff
# too: a process that daemonized (setsid -f, a double fork) leaves our tree only when its
# short-lived parent exits, which no event reports.
OWN_RECHECK_FIRST, OWN_RECHECK_MAX = 0.05, 2.0

# on_change(process_name, running, pid, how): called from the watcher thread on every
# transition and, after each scan, with the state of every entry (running or not).
ChangeCallback = Callable[[str, bool, "int | None", str], None]


def is_own(pid: int, me: int | None = None) -> bool:
    """True for this daemon and its descendants (walks the parent chain)."""
    me = me or os.getpid()
    for _ in range(64):
        if pid == me:
            return True
        if pid <= 1:
            return False
        info = procfs.ppid_state(pid)
        if info is None:
            return False
        pid = info[0]
    return False


def open_proc_connector() -> socket.socket | None:
    """Subscribe to the kernel's process events, or None where it is refused."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    except OSError as exc:
        LOG.info("proc connector unavailable (%s): new processes are found by the scan",
                 exc)
        return None
    try:
        sock.bind((0, CN_IDX_PROC))
        op = struct.pack("=I", PROC_CN_MCAST_LISTEN)
        cn = _CNMSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(op), 0)
        msg = _NLMSG.pack(_NLMSG.size + len(cn) + len(op), NLMSG_DONE, 0, 0, 0) + cn + op
        sock.send(msg)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        return sock
    except OSError as exc:
        sock.close()
        LOG.info("proc connector refused (%s): new processes are found by the scan", exc)
        return None


def parse_proc_events(data: bytes):
    """Yield (what, pid, parent_pid) for FORK (new processes only) and EXEC events."""
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length = _NLMSG.unpack_from(data, offset)[0]
        if length < _NLMSG.size:
            return
        body = offset + _NLMSG.size + _CNMSG.size
        if body + _EVENT.size <= offset + length:
            what = _EVENT.unpack_from(data, body)[0]
            ev = body + _EVENT.size
            if what == PROC_EVENT_EXEC:
                _pid, tgid = struct.unpack_from("=ii", data, ev)
                yield what, tgid, None
            elif what == PROC_EVENT_FORK:
                _ppid, ptgid, cpid, ctgid = struct.unpack_from("=iiii", data, ev)
                if cpid == ctgid:
                    yield what, ctgid, ptgid
        offset += (length + 3) & ~3


class Watcher:
    """Owns the epoll, the pidfds and the knowledge of which entry has which pids."""

    def __init__(self, entries: list[ProcessEntry], check_interval: float,
                 on_change: ChangeCallback, use_proc_connector: bool = True,
                 freeze_timeout: float = 0.0, freeze_check_interval: float = 2.0):
        self._entries = list(entries)
        self.check_interval = check_interval
        self.freeze_timeout = freeze_timeout  # default of entries without their own
        self.freeze_check_interval = freeze_check_interval
        self._freeze = FreezeTracker()
        self._on_change = on_change
        self._use_connector = use_proc_connector
        self._lock = threading.RLock()
        self._epoll = select.epoll()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake, select.EPOLLIN)
        self._pidfds: dict[int, int] = {}  # pid -> pidfd
        self._fd_pid: dict[int, int] = {}  # pidfd -> pid
        self._pid_names: dict[int, set[str]] = {}  # pid -> entries it matches
        self._own: dict[int, set[str]] = {}  # matches that were our descendants, to recheck
        self._conn: socket.socket | None = None
        self._scan_now = False
        self._recheck_now = False
        self._recheck_delay = OWN_RECHECK_FIRST
        self._recheck_at: float | None = None  # next backoff recheck while candidates wait
        self.last_scan: float = 0.0
        self.scan_seconds: float = 0.0
        self.scans = 0  # full process-table scans so far (the safety net's cost)

    # -- public -------------------------------------------------------------------------------
    @property
    def proc_connector(self) -> bool:
        return self._conn is not None

    def open(self) -> None:
        """Subscribe to the proc connector (if asked) and scan once; then run ``loop``."""
        if self._use_connector:
            self._conn = open_proc_connector()
            if self._conn:
                self._epoll.register(self._conn.fileno(), select.EPOLLIN)
        self.scan()

    def wake(self) -> None:
        """End the current epoll wait (to stop, or to act on a request)."""
        os.eventfd_write(self._wake, 1)

    def close(self) -> None:
        """After the loop ended: release every pidfd and the connector."""
        with self._lock:
            for fd in list(self._fd_pid):
                os.close(fd)
            self._fd_pid.clear()
            self._pidfds.clear()
        if self._conn:
            self._conn.close()

    def set_entries(self, entries: list[ProcessEntry]) -> None:
        """Swap the list (SIGHUP); pids no entry matches any more are released."""
        with self._lock:
            self._entries = list(entries)
            names = {e.process_name for e in entries}
            for pid in list(self._pid_names):
                self._pid_names[pid] &= names
                if not self._pid_names[pid]:
                    self._release(pid)
        self.scan()

    def running(self, name: str) -> list[int]:
        """The entry's matching pids that run (frozen ones do not count)."""
        with self._lock:
            return sorted(p for p, n in self._pid_names.items()
                          if name in n and p not in self._freeze.frozen)

    def frozen(self, name: str) -> dict[int, str]:
        """The entry's matching pids that are frozen: pid → why."""
        with self._lock:
            return {p: self._freeze.frozen[p].detail for p, n in self._pid_names.items()
                    if name in n and p in self._freeze.frozen}

    def kill_frozen(self, name: str) -> list[tuple[int, int]]:
        """SIGKILL the entry's frozen pids through their pidfds (a recycled pid cannot be
        hit). SIGKILL, not SIGTERM: a stopped process would only see SIGTERM once
        continued, a process in "D" handles no signal until it leaves the kernel, and a
        deadlocked one would not shut down cleanly anyway; SIGKILL ends a stopped process
        at once and a "D" one the moment it wakes (at once for a killable wait).
        Returns (pid, a duplicate of its pidfd) for each, for the caller to wait on and
        close."""
        out = []
        with self._lock:
            for pid in self.frozen(name):
                fd = self._pidfds.get(pid)
                if fd is None:
                    continue
                try:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                except OSError as exc:
                    LOG.error("cannot kill frozen pid %s of %s: %s", pid, name, exc)
                    continue
                self._freeze.killed(pid)  # waking from "D" to die is no thaw
                out.append((pid, os.dup(fd)))
        return out

    def mark_frozen(self, name: str, detail: str) -> None:
        """The entry's liveness command keeps failing: all its pids count as frozen (until
        they exit) and, as none runs any more, "not running" is pushed."""
        with self._lock:
            pids = [p for p, n in self._pid_names.items() if name in n]
            new = [p for p in pids if self._freeze.mark(p, detail)]
        if new:
            self._push_frozen(new)

    def watched(self) -> int:
        with self._lock:
            return len(self._pidfds)

    def frozen_count(self) -> int:
        """Watched pids that count as frozen now (shown in health)."""
        with self._lock:
            return len(self._freeze.frozen)

    def request_scan(self) -> None:
        """Ask the watcher thread for a full scan now (only where nothing pushes)."""
        self._scan_now = True
        self.wake()

    def after_command(self) -> None:
        """A command of ours returned: what it started and left running is no longer our
        descendant. Look at those candidates again (a few /proc reads); without the proc
        connector there are none, so scan instead."""
        if self._conn is None:
            self.request_scan()
            return
        self._recheck_now = True
        self.wake()

    def scan(self) -> dict[str, bool]:
        """Reconcile with the process table; report every entry's state. Thread-safe."""
        started = time.monotonic()
        me = os.getpid()
        found: dict[int, set[str]] = {}
        own = {me}
        with self._lock:
            entries = list(self._entries)
        procs = []
        for proc in psutil.process_iter(["pid", "ppid", "cmdline", "status", "name"]):
            info = proc.info
            procs.append(info)
        parents = {i["pid"]: i["ppid"] for i in procs}
        for info in procs:
            pid = info["pid"]
            if info["status"] == psutil.STATUS_ZOMBIE or not info["cmdline"]:
                continue
            names = {e.process_name for e in entries
                     if e.matches(info["cmdline"], info["name"] or "")}
            if not names or self._descends(pid, parents, own, me):
                continue
            found[pid] = names
        with self._lock:
            for pid, names in found.items():
                if pid not in self._pidfds:
                    self._watch(pid, names, "scan")
                else:
                    self._pid_names[pid] = names
            self._own = {p: n for p, n in self._own.items()
                         if p in parents and p not in self._pidfds}
            state = {e.process_name: False for e in self._entries}
            for pid, names in self._pid_names.items():
                if pid in self._freeze.frozen:
                    continue
                for name in names:
                    if name in state:
                        state[name] = True
        self.last_scan = time.time()
        self.scan_seconds = time.monotonic() - started
        self.scans += 1
        for name, running in state.items():
            pids = self.running(name)
            self._on_change(name, running, pids[0] if pids else None, "scan")
        return state

    # -- internals ----------------------------------------------------------------------------
    @staticmethod
    def _descends(pid: int, parents: dict[int, int], own: set[int], me: int) -> bool:
        chain = []
        cur = pid
        for _ in range(64):
            if cur in own:
                own.update(chain)
                return True
            if cur <= 1:
                return False
            if cur not in parents:  # started after the snapshot: ask /proc
                if is_own(cur, me):
                    own.update(chain)
                    return True
                return False
            chain.append(cur)
            cur = parents[cur]
        return False

    def _watch(self, pid: int, names: set[str], how: str) -> bool:
        """Open a pidfd for ``pid`` (caller holds the lock); False if it is gone."""
        try:
            fd = os.pidfd_open(pid)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                LOG.warning("pidfd_open(%s) failed: %s", pid, exc)
            return False
        info = procfs.ppid_state(pid)  # after pidfd_open: the pid cannot be reused under us
        if info is None or info[1] == "Z":
            os.close(fd)
            return False
        self._epoll.register(fd, select.EPOLLIN)
        self._pidfds[pid] = fd
        self._fd_pid[fd] = pid
        self._pid_names[pid] = set(names)
        LOG.debug("watching pid %s for %s (%s): %s", pid, sorted(names), how,
                  " ".join(procfs.argv(pid) or [])[:200])
        return True

    def _live_names(self) -> set[str]:
        """Entries with a matching pid that runs (not frozen); caller holds the lock."""
        return {n for p, s in self._pid_names.items() if p not in self._freeze.frozen
                for n in s}

    def _release(self, pid: int) -> None:
        self._freeze.forget(pid)
        fd = self._pidfds.pop(pid, None)
        self._pid_names.pop(pid, None)
        if fd is not None:
            self._fd_pid.pop(fd, None)
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass
            os.close(fd)

    def _exited(self, fd: int) -> None:
        with self._lock:
            pid = self._fd_pid.get(fd)
            if pid is None:
                return
            names = self._pid_names.get(pid, set())
            was_frozen = pid in self._freeze.frozen
            self._release(pid)
            live = self._live_names()
            gone = [] if was_frozen else [n for n in names if n not in live]
        for name in names:
            LOG.info("process %s (pid %s) exited%s", name, pid,
                     "" if name in gone else "; other matching pids still run")
        for name in gone:
            self._on_change(name, False, pid, "pidfd")

    def _new_process(self, pid: int, parent: int | None) -> None:
        with self._lock:
            if pid in self._pidfds:
                return
            if parent is not None and parent not in self._pid_names \
                    and parent not in self._own:  # (a command's child that daemonizes)
                return  # a fork of an unwatched process: its exec will tell us more
            entries = list(self._entries)
        names = self._matching(pid, entries)
        if not names:
            return
        if is_own(pid):  # started by our command: it counts once the command has returned
            with self._lock:
                if len(self._own) < OWN_CANDIDATES:
                    self._own[pid] = names
                    self._recheck_delay = OWN_RECHECK_FIRST
                    self._recheck_at = time.monotonic() + OWN_RECHECK_FIRST
            return
        self._found(pid, names)

    def _matching(self, pid: int, entries: list[ProcessEntry]) -> set[str]:
        argv = procfs.argv(pid)
        if not argv:
            return set()
        comm = procfs.comm(pid)
        return {e.process_name for e in entries if e.matches(argv, comm)}

    def _found(self, pid: int, names: set[str]) -> None:
        """Watch a new matching pid; push "running" for the entries it brings back."""
        with self._lock:
            if pid in self._pidfds:
                return
            was = self._live_names()
            if not self._watch(pid, names, "proc connector"):
                return
        for name in names - was:
            self._on_change(name, True, pid, "proc connector")

    def _recheck_own(self) -> None:
        """Candidates that no longer descend from us (their command returned) are found."""
        with self._lock:
            candidates, entries = list(self._own), list(self._entries)
        for pid in candidates:
            info = procfs.ppid_state(pid)
            if info is not None and info[1] != "Z" and is_own(pid):
                continue  # still ours (the command runs yet): ask again next time
            with self._lock:
                self._own.pop(pid, None)
            if info is None or info[1] == "Z":
                continue
            names = self._matching(pid, entries)  # it may have exec'd something else since
            if names:
                self._found(pid, names)

    def _bound(self, names: set[str], entries: dict[str, ProcessEntry]) -> float:
        """The shortest freeze_timeout of the entries a pid matches (0: not checked)."""
        bounds = []
        for name in names:
            entry = entries.get(name)
            if entry is None:
                continue
            bound = self.freeze_timeout if entry.freeze_timeout is None \
                else entry.freeze_timeout
            if bound > 0:
                bounds.append(bound)
        return min(bounds) if bounds else 0.0

    def check_freeze(self) -> None:
        """The low-rate poll: two /proc reads per watched pid, then push what changed."""
        with self._lock:
            entries = {e.process_name: e for e in self._entries}
            bounds = {p: self._bound(n, entries) for p, n in self._pid_names.items()}
        samples = FreezeTracker.read(bounds)  # /proc reads outside the lock
        with self._lock:
            bounds = {p: b for p, b in bounds.items() if p in self._pid_names}  # still ours
            frozen, thawed = self._freeze.update(bounds, samples, time.monotonic())
        if frozen:
            self._push_frozen(frozen)
        for pid in thawed:
            with self._lock:
                names = set(self._pid_names.get(pid, ()))
                others = {n for p, s in self._pid_names.items()
                          if p != pid and p not in self._freeze.frozen for n in s}
            for name in sorted(names):
                LOG.warning("process %s (pid %s) runs again (it was frozen)", name, pid)
                if name not in others:
                    self._on_change(name, True, pid, "thawed")

    def _push_frozen(self, pids: list[int]) -> None:
        """Frozen pids no longer count: push "not running" for the entries left with none."""
        with self._lock:
            live = self._live_names()
            what = {p: (set(self._pid_names.get(p, ())), self._freeze.frozen[p].detail)
                    for p in pids if p in self._freeze.frozen}
        pushed = set()
        for pid, (names, detail) in what.items():
            for name in sorted(names):
                if name in live:
                    LOG.warning("process %s (pid %s) is frozen: %s; other matching pids "
                                "still run", name, pid, detail)
                elif name not in pushed:
                    pushed.add(name)
                    self._on_change(name, False, pid, f"frozen: {detail}")

    def _read_connector(self) -> None:
        while True:
            try:
                data = self._conn.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # events were lost: the scan catches up
                    LOG.warning("proc connector overrun; rescanning")
                    self._scan_now = True
                    continue
                LOG.warning("proc connector failed (%s); falling back to the scan", exc)
                self._epoll.unregister(self._conn.fileno())
                self._conn.close()
                self._conn = None
                return
            for _what, pid, parent in parse_proc_events(data):
                self._new_process(pid, parent)

    def loop(self, stopping: Callable[[], bool]) -> None:
        """The watcher thread (the source spawns it; ``wake()`` after asking it to stop)."""
        next_scan = time.monotonic() + self.check_interval
        next_freeze = time.monotonic() + self.freeze_check_interval
        while not stopping():
            wake_at = min(next_scan, next_freeze) if self._recheck_at is None \
                else min(next_scan, next_freeze, self._recheck_at)
            timeout = max(0.0, wake_at - time.monotonic())
            try:
                events = self._epoll.poll(timeout)
            except InterruptedError:
                continue
            for fd, _mask in events:
                try:
                    if fd == self._wake:
                        os.eventfd_read(self._wake)
                    elif self._conn is not None and fd == self._conn.fileno():
                        self._read_connector()
                    else:
                        self._exited(fd)
                except Exception:  # noqa: BLE001 - the loop must survive anything
                    LOG.exception("watcher: handling fd %s failed", fd)
            if stopping():
                return
            due = self._recheck_at is not None and time.monotonic() >= self._recheck_at
            if self._recheck_now or due:
                self._recheck_now = False
                try:
                    self._recheck_own()
                except Exception:  # noqa: BLE001
                    LOG.exception("watcher: rechecking our commands' processes failed")
                with self._lock:
                    if not self._own:
                        self._recheck_at = None
                    elif due:
                        self._recheck_delay = min(self._recheck_delay * 2, OWN_RECHECK_MAX)
                        self._recheck_at = time.monotonic() + self._recheck_delay
            if time.monotonic() >= next_freeze:
                try:
                    self.check_freeze()
                except Exception:  # noqa: BLE001
                    LOG.exception("watcher: freeze check failed")
                next_freeze = time.monotonic() + self.freeze_check_interval
            if self._scan_now or time.monotonic() >= next_scan:
                self._scan_now = False
                try:
                    self.scan()
                except Exception:  # noqa: BLE001
                    LOG.exception("watcher: scan failed; next one in %ss",
                                  self.check_interval)
                next_scan = time.monotonic() + self.check_interval
