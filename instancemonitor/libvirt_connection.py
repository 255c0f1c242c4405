"""The libvirt half of the libvirt source: a read-only connection with keepalive, libvirt's
default event loop in one dedicated thread, and a connector loop that (re)connects with
capped backoff, registers the domain-event callbacks and hands every new connection to
``on_connected`` (the reconcile), with what the domains went unobserved through.

A libvirtd that stops answering is caught by keepalive on the connection and by a timer on
the connect (hang.py); both end in the same reconnect, and the reconcile after it reports
what happened meanwhile.

Nothing here decides: each domain event goes to ``on_event(event_id, dom, event, detail)``
as libvirt gave it.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from instancemonitor import event_filter, libvirt_auth
from instancemonitor.hang import Hang
from instancemonitor.libvirt_constants import CLOSE_REASONS, EVENT_IDS

LOG = logging.getLogger(__name__)

_loop_lock = threading.Lock()
_loop_thread: threading.Thread | None = None
_loop_tick = time.monotonic()  # a 1 s libvirt timer moves it: the loop turns
TICK_STALE = 30.0  # no turn for this long: the loop is stuck (a callback blocked?)


def start_event_loop() -> None:
    """libvirt's default event loop implementation, once per process, in one thread (it
    belongs to the process, not to a source: libvirt allows one registration)."""
    global _loop_thread
    import libvirt
    with _loop_lock:
        if _loop_thread is not None:
            return
        libvirt.virEventRegisterDefaultImpl()
        # libvirt prints errors to stderr by default; ours are logged where they happen.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

        def tick(_timer, _opaque):
            global _loop_tick
            _loop_tick = time.monotonic()

        libvirt.virEventAddTimeout(1000, tick, None)

        def run():
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:  # noqa: BLE001 - the loop must never die
                    LOG.exception("libvirt event loop iteration failed")
                    time.sleep(0.1)

        _loop_thread = threading.Thread(target=run, name="libvirt-event-loop", daemon=True)
        _loop_thread.start()


def event_loop_thread() -> threading.Thread | None:
    return _loop_thread


def event_loop_stuck() -> str | None:
    idle = time.monotonic() - _loop_tick
    if idle > TICK_STALE:
        return f"libvirt event loop stuck for {idle:.0f}s (a callback blocked?)"
    return None


class LibvirtConnection:
    """One read-only connection kept open. run() is the connector loop (the owner runs it
    in a thread of its own and sets ``stop`` to end it)."""

    CONNECT_WAIT = 2.0  # seconds start-up waits for the first connection attempt

    def __init__(self, conf, stop: threading.Event, event_ids: Callable[[], list[str]],
                 on_event: Callable, on_connected: Callable):
        self.conf = conf
        self.uri = conf.libvirt.connection_uri
        self.conn = None
        self._stop = stop
        self._event_ids = event_ids          # what the current event filter asks for
        self._on_event = on_event
        self._on_connected = on_connected    # (conn, unobserved) -> number of domains
        self._closed = threading.Event()
        self._callback_ids: list[int] = []
        self._connected = False
        self._last_error = ""
        self.status = "not connected yet"
        self.reconnects = 0
        self.first_attempt = threading.Event()
        self._connecting_since: float | None = None  # monotonic, while openReadOnly runs
        self.hang = Hang(self.uri)
        self._unobserved = "daemon not running"  # why events were missed before the next connect

    @property
    def hang_bound(self) -> float:
        """Seconds without an answer that make libvirtd hung: keepalive's own bound."""
        group = self.conf.instancemonitor
        return float(group.keepalive_interval * group.keepalive_count)

    @property
    def connected(self) -> bool:
        return self._connected

    def hung_for(self) -> float | None:
        """Seconds an openReadOnly has been waiting beyond CONNECT_WAIT (libvirtd hung)."""
        since = self._connecting_since
        if since is not None and time.monotonic() - since > self.CONNECT_WAIT:
            return time.monotonic() - since
        return None

    def close(self) -> None:
        """End the connector loop (with ``stop`` set) and the connection."""
        self._closed.set()

    # -- the connector loop -----------------------------------------------------------------
    def run(self) -> None:
        group = self.conf.instancemonitor
        delay = group.reconnect_initial_interval
        while not self._stop.is_set():
            if self._connected:
                self._closed.wait()
                if self._stop.is_set():
                    return
                self.disconnect()
                delay = group.reconnect_initial_interval
                self._stop.wait(min(delay, 0.2))  # libvirtd restarting: first retry quickly
                continue
            ok = self._try_connect()
            self.first_attempt.set()
            if ok:
                continue
            self.status = (f"libvirt {self.uri} unreachable ({self._last_error}); retry in "
                           f"{delay:.1f}s")
            self._stop.wait(delay)
            delay = min(delay * 2, group.reconnect_max_interval)

    def _try_connect(self) -> bool:
        import libvirt
        group = self.conf.instancemonitor
        self._connecting_since = time.monotonic()
        # The connect has no keepalive yet and no timeout: a hung libvirtd leaves it waiting
        # (it returns once libvirtd answers, or fails once it is killed). The timer only
        # says so, within the same bound keepalive applies afterwards.
        bound = self.hang_bound
        timer = threading.Timer(bound, self._connect_overdue, (self._connecting_since, bound))
        timer.daemon = True
        timer.start()
        try:
            conn = libvirt_auth.open_connection(self.uri)  # read-only; auth.conf works
        except libvirt.libvirtError as exc:
            timer.cancel()
            self._connecting_since = None
            msg = exc.get_error_message() or str(exc)
            hung = self.hang.end(f"unreachable: {msg}")
            if hung:
                self._unobserved = f"{hung}, then unreachable"
            if msg != self._last_error:
                LOG.error("libvirt %s unreachable: %s (retrying with backoff up to %ss)",
                          self.uri, msg, group.reconnect_max_interval)
            self._last_error = msg
            self.status = f"libvirt {self.uri} unreachable: {msg}"
            return False
        timer.cancel()
        self._connecting_since = None
        hung = self.hang.end("reconnected; reconciling what the domains did meanwhile")
        if hung:
            self._unobserved = hung
        try:
            conn.setKeepAlive(group.keepalive_interval, group.keepalive_count)
        except libvirt.libvirtError as exc:  # e.g. test:/// has no keepalive
            LOG.debug("keepalive not available on %s: %s", self.uri, exc)
        self._closed.clear()
        ids = []
        try:
            conn.registerCloseCallback(self._on_close, None)
            for event_id in self._event_ids():
                try:
                    ids.append(conn.domainEventRegisterAny(
                        None, EVENT_IDS[event_id], self._callback_for(event_id), None))
                except libvirt.libvirtError as exc:
                    if event_id in event_filter.ALWAYS_REGISTERED:
                        raise
                    LOG.error("libvirt %s: cannot register for %s events (named by the "
                              "event filter): %s", self.uri, event_id, exc)
        except libvirt.libvirtError as exc:
            LOG.error("libvirt %s: registering event callbacks failed: %s", self.uri, exc)
            try:
                conn.close()
            except libvirt.libvirtError:
                pass
            self._last_error = str(exc)
            return False
        self.conn, self._callback_ids = conn, ids
        self._connected = True
        self.reconnects += 1
        self._last_error = ""
        LOG.info("connected to libvirt %s (read-only, keepalive %ss x %s); %d event "
                 "callbacks registered", self.uri, group.keepalive_interval,
                 group.keepalive_count, len(ids))
        unobserved, self._unobserved = self._unobserved, ""
        try:
            n = self._on_connected(conn, unobserved)
            self.status = f"connected to {self.uri}, {n} domains"
        except libvirt.libvirtError as exc:
            LOG.error("reconciliation after connecting failed: %s", exc)
            self.status = f"connected to {self.uri}; reconciliation failed: {exc}"
        return True

    def _connect_overdue(self, started: float, bound: float) -> None:
        if self._connecting_since == started:  # still waiting (not a late timer)
            self.hang.begin(f"the connection not answered within {bound:g}s", bound)

    def _on_close(self, conn, reason, opaque) -> None:
        why = CLOSE_REASONS.get(reason, reason)
        self._connected = False
        if why == "keepalive timeout":  # alive (no EOF) but silent: hung
            group = self.conf.instancemonitor
            self.hang.begin(f"no answer to {group.keepalive_count} keepalive(s) sent "
                            f"{group.keepalive_interval}s apart", self.hang_bound)
            self._unobserved = "libvirtd hung"  # completed by hang.end() at the reconnect
        else:
            LOG.warning("libvirt connection to %s closed (%s): reconnecting", self.uri, why)
            self._unobserved = f"connection lost ({why})"
        self.status = f"libvirt {self.uri} connection lost ({why}); reconnecting"
        self._closed.set()

    def disconnect(self) -> None:
        import libvirt
        conn, self.conn = self.conn, None
        self._connected = False
        if conn is None:
            return
        for cid in self._callback_ids:
            try:
                conn.domainEventDeregisterAny(cid)
            except libvirt.libvirtError:
                pass
        self._callback_ids = []
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    # -- callbacks (event-loop thread): libvirt's arguments -> on_event ---------------------
    def _callback_for(self, event_id: str):
        on_event = self._on_event
        if event_id == "LIFECYCLE":
            return lambda conn, dom, event, detail, opaque: on_event(
                "LIFECYCLE", dom, event, detail)
        if event_id == "WATCHDOG":
            return lambda conn, dom, action, opaque: on_event("WATCHDOG", dom, action, -1)
        if event_id == "IO_ERROR":
            return lambda conn, dom, src, alias, action, opaque: on_event(
                "IO_ERROR", dom, action, -1)
        if event_id == "IO_ERROR_REASON":
            return lambda conn, dom, src, alias, action, reason, opaque: on_event(
                "IO_ERROR_REASON", dom, action, -1)
        return lambda conn, dom, *rest: on_event(event_id, dom, -1, -1)
