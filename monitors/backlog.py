"""Detections the outbox could not take (disk full, read-only file system, I/O error),
held in memory and put into the outbox as soon as it answers again.

One per daemon, shared by all its sources (the core emitter's fallback, so no source writes
its own). Retried in the order the delivery worker would send them: host, then process, then
VM, oldest first within a type, so a subject's STOPPED never lands after its STARTED. While
anything is held, a new detection queues behind it rather than overtaking it.

A source passes ``on_stored(result)``: what it may only remember once the detection is
durable (the instancemonitor's last known domain state, the hostmonitor's applied actions,
processmonitor's verdict with the row's id from ``result``). So a restart
while detections are held re-detects them instead of losing them.
"""
from __future__ import annotations

import dataclasses
import errno
import itertools
import logging
import os
import sqlite3
import threading
import time
from typing import Callable

from monitors.notification import Notification

LOG = logging.getLogger(__name__)

LIMIT = 10000       # detections held at most; beyond, VM detections are refused (see put)
LOG_EVERY = 60.0    # while degraded, one reminder line per minute, not one per attempt


@dataclasses.dataclass
class Held:
    """Returned by the emitter when the detection waits in memory: no outbox id yet."""
    id: None = None
    queued: bool = True
    held: bool = True


@dataclasses.dataclass
class _Item:
    seq: int
    detected_at: float
    notification: Notification
    source: str
    drivers: list[str]
    decision: dict | None
    on_stored: Callable | None
    first: list[str] = dataclasses.field(default_factory=list)
    not_before: dict[str, float] = dataclasses.field(default_factory=dict)


def _mount_read_only(directory: str) -> bool:
    """The mount holding ``directory`` is read-only, including ext4's emergency read-only
    remount after an error (its option list still starts with ``rw``)."""
    best, options = "", []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 4:
                    continue
                point = fields[1].replace("\\040", " ")
                if (directory == point or directory.startswith(point.rstrip("/") + "/")) \
                        and len(point) >= len(best):
                    best, options = point, fields[3].split(",")
    except OSError:
        return False
    return "ro" in options or "emergency_ro" in options


def describe(exc: BaseException, path: str) -> str:
    """What an operator must fix, e.g. ``outbox not writable: disk full on /var/lib/x``."""
    directory = os.path.dirname(os.path.abspath(path))
    text = str(exc)
    code = getattr(exc, "errno", None) or getattr(exc, "sqlite_errorcode", None)
    readonly = full = False
    try:
        st = os.statvfs(directory)
        readonly = bool(st.f_flag & os.ST_RDONLY) or _mount_read_only(directory)
        full = st.f_bavail == 0 or (st.f_favail == 0 and st.f_files > 0)
    except OSError:
        pass
    low = text.lower()
    if not readonly and not full:
        # SQLite says "disk I/O error" for EROFS in WAL mode, and statvfs misses an ext4
        # emergency read-only remount (/proc/mounts still says rw): ask the kernel.
        probe = os.path.join(directory, f".outbox-probe-{os.getpid()}")
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
        except OSError as err:
            code = err.errno if err.errno in (errno.EROFS, errno.ENOSPC, errno.EIO) else code
            readonly = err.errno == errno.EROFS
    if readonly or code == errno.EROFS or "readonly" in low or "read-only" in low:
        cause = "read-only file system"
    elif full or code == errno.ENOSPC or "full" in low:
        cause = "disk full"
    elif code == errno.EIO or "i/o" in low:
        cause = "I/O error"
    elif "malformed" in low or "not a database" in low:
        cause = "corrupt database"
    else:
        cause = type(exc).__name__
    return f"outbox not writable: {cause} on {directory} ({text})"


def is_outbox_failure(exc: BaseException) -> bool:
    """Errors of the storage, not of the notification (those are raised to the source)."""
    return isinstance(exc, (sqlite3.Error, OSError))


class Backlog:
    def __init__(self, limit: int = LIMIT):
        self.limit = limit
        self._items: list[_Item] = []
        self._lock = threading.RLock()
        self._seq = itertools.count(1)
        self.error: str | None = None  # why the outbox does not take writes, while it does not
        self.since: float | None = None
        self.refused = 0  # detections refused because the backlog was full (logged each)
        self._last_log = 0.0

    def __len__(self) -> int:
        return len(self._items)

    # -- the emitter's side -----------------------------------------------------------------
    def put(self, outbox, notification: Notification, *, source: str, drivers: list[str],
            decision: dict | None, on_stored: Callable | None = None,
            first: list[str] | None = None, not_before: dict[str, float] | None = None):
        """Into the outbox if it answers and nothing older waits; else held. Returns the
        outbox's PutResult, or Held."""
        with self._lock:
            item = _Item(next(self._seq), time.time(), notification, source, drivers,
                         decision, on_stored, list(first or ()), dict(not_before or {}))
            if not self._items:
                try:
                    result = outbox.put(notification, source=source, drivers=drivers,
                                        decision=decision, first=item.first,
                                        not_before=item.not_before)
                except Exception as exc:  # noqa: BLE001 - sorted below
                    if not is_outbox_failure(exc):
                        raise
                    self._failed(exc, outbox.path)
                    return Held() if self._hold(item) else None
                self._stored(item, result)
                return result
            if not self._hold(item):
                return None
            results = self.flush(outbox)
            return results.get(item.seq, Held())

    def _hold(self, item: _Item) -> bool:
        if len(self._items) >= self.limit and item.notification.priority >= max(
                i.notification.priority for i in self._items):
            self.refused += 1
            LOG.error("outbox not writable and %d detections already held in memory: %s %s "
                      "on %s NOT kept (replay it with ha-monitors notify once the outbox "
                      "is fixed): %s", len(self._items), item.notification.type,
                      item.notification.payload, item.notification.hostname, self.error)
            return False
        if len(self._items) >= self.limit:  # keep the more urgent one, drop the newest VM
            victim = max(self._items, key=lambda i: (i.notification.priority, i.seq))
            self._items.remove(victim)
            self.refused += 1
            LOG.error("backlog full: %s %s on %s dropped from memory for a more urgent "
                      "detection", victim.notification.type, victim.notification.payload,
                      victim.notification.hostname)
        self._items.append(item)
        return True

    # -- retrying ---------------------------------------------------------------------------
    def flush(self, outbox) -> dict[int, object]:
        """Put what is held into the outbox, most urgent and oldest first; stop at the first
        failure. Returns {seq: PutResult} of what was stored."""
        done: dict[int, object] = {}
        with self._lock:
            if not self._items:
                return done
            for item in sorted(self._items, key=lambda i: (i.notification.priority, i.seq)):
                try:
                    result = outbox.put(item.notification, source=item.source,
                                        drivers=item.drivers, first=item.first,
                                        not_before=item.not_before, decision={
                                            **(item.decision or {}),
                                            "held_in_memory_s": round(time.time()
                                                                      - item.detected_at, 3)})
                except Exception as exc:  # noqa: BLE001
                    if not is_outbox_failure(exc):
                        LOG.exception("held detection %s cannot be stored; dropped",
                                      item.notification.payload)
                        self._items.remove(item)
                        continue
                    self._failed(exc, outbox.path, held=len(self._items))
                    break
                self._items.remove(item)
                done[item.seq] = result
                LOG.warning("held detection %s %s on %s stored in the outbox as "
                            "notification %s after %.1fs in memory", item.notification.type,
                            item.notification.payload, item.notification.hostname, result.id,
                            time.time() - item.detected_at)
                self._stored(item, result)
            if not self._items and self.error:
                LOG.warning("outbox writable again after %.0fs (%s); nothing held in memory",
                            time.time() - (self.since or time.time()), self.error)
                self.error, self.since = None, None
        return done

    def _stored(self, item: _Item, result) -> None:
        if item.on_stored:  # given the PutResult (the row's id)
            try:
                item.on_stored(result)
            except Exception:  # noqa: BLE001
                LOG.exception("after storing %s", item.notification.payload)

    def _failed(self, exc: BaseException, path: str, held: int | None = None) -> None:
        error = describe(exc, path)
        now = time.monotonic()
        first = self.error is None
        if first:
            self.since = time.time()
        self.error = error
        if first or error != getattr(self, "_logged", None) or now - self._last_log >= LOG_EVERY:
            self._last_log, self._logged = now, error
            LOG.error("%s; %d detection(s) held in memory, retried every second (nothing "
                      "is dropped while the daemon runs; free space or fix the mount)",
                      error, len(self._items) + 1 if held is None else held)

    def state(self) -> dict:
        with self._lock:
            oldest = min((i.detected_at for i in self._items), default=None)
            return {"writable": self.error is None, "error": self.error, "since": self.since,
                    "held": len(self._items), "oldest_held": oldest, "refused": self.refused}

    def dump(self) -> list[str]:
        """At stop: what is still held, one line each, so the journal keeps it."""
        with self._lock:
            return [f"{i.notification.type} on {i.notification.hostname} at "
                    f"{i.notification.time_text}: {i.notification.payload} "
                    f"(from {i.source})" for i in self._items]
