"""processmonitor's writer of its verdict file (monitors/process_verdicts.py), in the order
the outbox stores what the verdicts stand on.

hostmonitor's compute column reads the file instead of the outbox, so the file must never
claim more than the outbox holds: ``gave_up`` is written only once the PROCESS STOPPED row
is durable (from the emitter's on_stored, with the row's id), and ``running`` after a
STOPPED only once the STARTED row is. While such a row waits (the disk is full: it is held
in memory), a later verdict for the same process waits behind it. A write that fails (the
disk is full) is kept and retried at the next verdict or ``retry()`` (every scan).

At start the file may hold a ``gave_up`` of an earlier run whose STOPPED is still the
outbox's latest word on that process: it stays until the process runs again or a new
STOPPED is stored, never downgraded to ``restarting`` by a new run's first attempts.
"""
from __future__ import annotations

import logging
import threading
import time

from monitors import process_verdicts, statefile
from monitors.process_verdicts import GAVE_UP, RESTARTING, RUNNING

LOG = logging.getLogger(__name__)

__all__ = ["VerdictFile", "RUNNING", "RESTARTING", "GAVE_UP"]


class VerdictFile:
    def __init__(self, state_path: str):
        self.state_path = state_path
        self._lock = threading.Lock()
        self._unwritten: dict[str, tuple[str, int | None]] = {}  # failed writes, to retry
        self._waiting: dict[str, int] = {}       # notifications not yet durable, per process
        self._after: dict[str, str] = {}         # the latest verdict that waits behind them
        self._warned = 0.0
        try:
            previous = process_verdicts.read(state_path)
        except (statefile.StateFileError, OSError) as exc:
            LOG.warning("%s; processmonitor writes it anew", exc)
            previous = {}
        self._gave_up = {name for name, v in previous.items() if v["verdict"] == GAVE_UP}

    def set(self, name: str, verdict: str) -> None:
        """A verdict that no notification carries (running, restarting)."""
        with self._lock:
            if self._waiting.get(name):
                self._after[name] = verdict
                return
            if verdict == RESTARTING and name in self._gave_up:
                return  # the outbox still says STOPPED: so does the file
            self._write(name, verdict, None)

    def expect(self, name: str) -> None:
        """A notification for ``name`` is being emitted: later verdicts wait for it."""
        with self._lock:
            self._waiting[name] = self._waiting.get(name, 0) + 1

    def stored(self, name: str, verdict: str, notification: int | None) -> None:
        """The notification carrying ``verdict`` is durable (row ``notification``)."""
        with self._lock:
            self._release(name)
            later = self._after.pop(name, None) if not self._waiting.get(name) else None
            self._write(name, verdict, notification)
            if later is not None and not (later == RESTARTING and name in self._gave_up):
                self._write(name, later, None)

    def dropped(self, name: str) -> None:
        """The notification was not kept (refused, or emit failed): nothing to wait for."""
        with self._lock:
            self._release(name)
            later = self._after.pop(name, None) if not self._waiting.get(name) else None
            if later is not None:
                self._write(name, later, None)

    def retry(self) -> None:
        with self._lock:
            for name, (verdict, notification) in list(self._unwritten.items()):
                if not self._write(name, verdict, notification):
                    return

    # -- internals (the lock is held) ------------------------------------------------------
    def _release(self, name: str) -> None:
        left = self._waiting.get(name, 0) - 1
        if left > 0:
            self._waiting[name] = left
        else:
            self._waiting.pop(name, None)

    def _write(self, name: str, verdict: str, notification: int | None) -> bool:
        if verdict == GAVE_UP:
            self._gave_up.add(name)
        elif verdict == RUNNING:
            self._gave_up.discard(name)
        self._unwritten.pop(name, None)
        try:
            process_verdicts.write(self.state_path, name, verdict, notification)
        except OSError as exc:
            self._unwritten[name] = (verdict, notification)
            if time.monotonic() - self._warned >= 60.0:  # once a minute, not per process
                self._warned = time.monotonic()
                LOG.warning("cannot write the verdict %s of %s to %s (%s); retried at the "
                            "next scan", verdict, name,
                            process_verdicts.path(self.state_path), exc)
            return False
        return True
