"""Whether libvirtd is hung: alive (its socket accepts) but not answering.

A stopped libvirtd (SIGSTOP, a deadlock, a process stuck in D state) kills nothing, so no
close callback says EOF: the connection just goes quiet. Two bounds catch it, both of
``keepalive_interval`` x ``keepalive_count`` seconds: libvirt's keepalive on an open
connection (the connection closes with VIR_CONNECT_CLOSE_REASON_KEEPALIVE; a call that
waits on a hung libvirtd fails with it) and a timer on the connect, which has no
keepalive yet. Either marks the hang here; the next answer of libvirtd (a connection, or
an error such as "connection refused" after it was killed) ends it.

This is the source's state that ``ha-monitors status`` (health), the journal (field
LIBVIRT_STATE=hung|answering) and the reconcile's decision (``unobserved``) read. Restarting
a hung libvirtd is not ours: that is processmonitor's (its process_list entry and its
freeze bound); instancemonitor only says so and reconnects.
"""
from __future__ import annotations

import logging
import threading
import time

from monitors import log

LOG = logging.getLogger(__name__)


class Hang:
    """The hang episodes of one libvirtd connection (thread-safe: the event loop's close
    callback, the connect timer and the connector thread all mark it)."""

    def __init__(self, uri: str):
        self.uri = uri
        self._lock = threading.Lock()
        self.since: float | None = None   # monotonic: since when libvirtd has not answered
        self.why = ""
        self.episodes = 0
        self.last: tuple[float, float] | None = None  # (seconds hung, wall-clock end)

    @property
    def hung(self) -> bool:
        return self.since is not None

    def begin(self, why: str, silent_for: float) -> bool:
        """libvirtd has not answered for ``silent_for`` seconds (``why``); True if this
        starts an episode (logged once, as an ERROR with LIBVIRT_STATE=hung)."""
        with self._lock:
            if self.since is not None:
                return False
            self.since, self.why = time.monotonic() - silent_for, why
            self.episodes += 1
        log.event(LOG, logging.ERROR, "libvirtd hung: %s on %s; reconnecting (restarting "
                  "libvirtd is processmonitor's job: its process_list entry)", why, self.uri,
                  fields={"LIBVIRT_STATE": "hung"})
        return True

    def end(self, how: str) -> str | None:
        """libvirtd answered (``how``: "reconnected", "unreachable: ..."). Returns what the
        domains missed while it was hung (for the reconcile's decision), or None."""
        with self._lock:
            since, self.since = self.since, None
            if since is None:
                return None
            seconds = time.monotonic() - since
            self.last = (seconds, time.time())
            why = self.why
        log.event(LOG, logging.WARNING, "libvirtd answers again after %.1fs hung (%s) on "
                  "%s: %s", seconds, why, self.uri, how, fields={"LIBVIRT_STATE": "answering"})
        return f"libvirtd hung {seconds:.0f}s ({why})"

    def for_seconds(self) -> float | None:
        since = self.since
        return None if since is None else time.monotonic() - since

    def describe(self) -> str:
        """One status phrase: the current episode, else the last one (or '')."""
        hung = self.for_seconds()
        if hung is not None:
            return f"libvirtd hung for {hung:.0f}s ({self.why})"
        if self.last:
            seconds, ended = self.last
            return (f"last libvirtd hang {seconds:.0f}s, ended "
                    f"{time.strftime('%H:%M:%S', time.localtime(ended))}"
                    f" ({self.episodes} since start)")
        return ""
