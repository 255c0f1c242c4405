"""The libvirt source: a read-only connection with keepalive, libvirt's default event loop
in one dedicated thread, and a connector thread that (re)connects with capped backoff,
re-registers the callbacks and reconciles after every (re)connect.

The domain-event callbacks run in the event-loop thread and do nothing but build the
Notification and call ``emit`` (one SQLite transaction); everything else (state flush,
reconnect, guest-agent pings) happens in other threads.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from monitors import log
from monitors.notification import VM, InvalidNotification, Notification
from monitors.source import Health

from instancemonitor import domain_rules, event_filter, reconcile

LOG = logging.getLogger(__name__)

_loop_lock = threading.Lock()
_loop_thread: threading.Thread | None = None
_loop_tick = time.monotonic()  # a 1 s libvirt timer moves it: the loop turns
TICK_STALE = 30.0  # no turn for this long: the loop is stuck (a callback blocked?)


def start_event_loop() -> None:
    """libvirt's default event loop implementation, once per process, in one thread."""
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


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).replace(tzinfo=None)


class LibvirtSource:
    name = "libvirt"

    def __init__(self, conf):
        self.conf = conf
        self.uri = conf.libvirt.connection_uri
        self.hostname = conf.hostname
        self.filter = event_filter.load(conf.instancemonitor.event_filter_file)
        self.rules = domain_rules.DomainRules(conf.instancemonitor.ignore_domains,
                                              conf.instancemonitor.only_nova_domains)
        self.states = reconcile.DomainStates(conf.state_path)
        self.emit = None
        self.conn = None
        self._closed = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._callback_ids: list[int] = []
        self._status = "not connected yet"
        self._connected = False
        self.events_seen = 0
        self.reconnects = 0
        self.guest_agent = None
        self._first_attempt = threading.Event()
        self._connecting_since: float | None = None  # monotonic, while openReadOnly runs
        # Per domain, state changes waiting for a detection the outbox has not taken yet
        # (disk full...): the last known state never runs ahead of what is durable, so a
        # restart meanwhile reports the event again instead of losing it.
        self._order_lock = threading.RLock()
        self._deferred: dict[str, list[list]] = {}

    # -- Source interface -------------------------------------------------------------------
    def start(self, emit) -> None:
        self.emit = emit
        self.states.load()
        start_event_loop()
        # Connect in the connector thread: openReadOnly has no timeout, and a hung libvirtd
        # (accepting on its socket, never answering) must not keep the daemon from READY.
        # Wait a bounded moment so READY's STATUS already says whether libvirtd is there.
        for target, name in ((self._connector, "libvirt-connector"),
                             (self._flusher, "domain-state-flush")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if not self._first_attempt.wait(self.CONNECT_WAIT):
            self._status = (f"libvirt {self.uri}: no answer to the connection after "
                            f"{self.CONNECT_WAIT:g}s (libvirtd hung?); still trying")
        if self.conf.instancemonitor.guest_agent_heartbeat:
            from instancemonitor.guest_agent import GuestAgentMonitor
            self.guest_agent = GuestAgentMonitor(self.conf, self)
            self.guest_agent.start()

    def stop(self) -> None:
        self._stop.set()
        self._closed.set()
        if self.guest_agent:
            self.guest_agent.stop()
        for t in self._threads:
            t.join(timeout=3)
        self._disconnect()
        self.states.save()

    def reload(self, new_conf) -> None:
        new_filter = event_filter.load(new_conf.instancemonitor.event_filter_file)
        new_rules = domain_rules.DomainRules(new_conf.instancemonitor.ignore_domains,
                                             new_conf.instancemonitor.only_nova_domains)
        if new_conf.libvirt.connection_uri != self.uri:
            LOG.warning("reload: [libvirt] connection_uri changed; it takes effect at the "
                        "next restart (still using %s)", self.uri)
        self.filter, self.rules, self.conf = new_filter, new_rules, new_conf
        self.hostname = new_conf.hostname
        LOG.info("reload: event filter from %s, %d ignore pattern(s), only_nova_domains=%s",
                 new_filter.origin, len(new_rules.patterns), new_rules.only_nova)

    CONNECT_WAIT = 2.0  # seconds start() waits for the first connection attempt

    def health(self) -> Health:
        since = self._connecting_since
        if since is not None and time.monotonic() - since > self.CONNECT_WAIT:
            return Health(False, f"libvirt {self.uri}: no answer to the connection for "
                                 f"{time.monotonic() - since:.0f}s (libvirtd hung?)")
        return Health(self._connected, self._status)

    def threads(self) -> list[threading.Thread]:
        """The loops that must stay alive (checked by the runtime before each watchdog
        ping)."""
        return [t for t in (_loop_thread, *self._threads) if t is not None]

    def ticked(self) -> str | None:
        idle = time.monotonic() - _loop_tick
        if idle > TICK_STALE:
            return f"libvirt event loop stuck for {idle:.0f}s (a callback blocked?)"
        return None

    # -- connection -------------------------------------------------------------------------
    def _connector(self) -> None:
        delay = self.conf.instancemonitor.reconnect_initial_interval
        while not self._stop.is_set():
            if self._connected:
                self._closed.wait()
                if self._stop.is_set():
                    return
                self._disconnect()
                delay = self.conf.instancemonitor.reconnect_initial_interval
                self._stop.wait(min(delay, 0.2))  # libvirtd restarting: first retry quickly
                continue
            ok = self._try_connect()
            self._first_attempt.set()
            if ok:
                continue
            cap = self.conf.instancemonitor.reconnect_max_interval
            self._status = f"libvirt {self.uri} unreachable ({self._last_error}); retry in {delay:.1f}s"
            self._stop.wait(delay)
            delay = min(delay * 2, cap)

    _last_error = ""

    def _try_connect(self) -> bool:
        import libvirt
        self._connecting_since = time.monotonic()
        try:
            conn = libvirt.openReadOnly(self.uri)
        except libvirt.libvirtError as exc:
            self._connecting_since = None
            msg = exc.get_error_message() or str(exc)
            if msg != self._last_error:
                LOG.error("libvirt %s unreachable: %s (retrying with backoff up to %ss)",
                          self.uri, msg, self.conf.instancemonitor.reconnect_max_interval)
            self._last_error = msg
            self._status = f"libvirt {self.uri} unreachable: {msg}"
            return False
        self._connecting_since = None
        try:
            conn.setKeepAlive(self.conf.instancemonitor.keepalive_interval,
                              self.conf.instancemonitor.keepalive_count)
        except libvirt.libvirtError as exc:  # e.g. test:/// has no keepalive
            LOG.debug("keepalive not available on %s: %s", self.uri, exc)
        self._closed.clear()
        ids = []
        try:
            conn.registerCloseCallback(self._on_close, None)
            for event_id in self.filter.event_ids():
                try:
                    ids.append(conn.domainEventRegisterAny(
                        None, event_filter.EVENT_IDS[event_id], self._callback_for(event_id),
                        None))
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
                 "callbacks registered", self.uri, self.conf.instancemonitor.keepalive_interval,
                 self.conf.instancemonitor.keepalive_count, len(ids))
        try:
            n = self._reconcile(conn)
            self._status = f"connected to {self.uri}, {n} domains"
        except libvirt.libvirtError as exc:
            LOG.error("reconciliation after connecting failed: %s", exc)
            self._status = f"connected to {self.uri}; reconciliation failed: {exc}"
        return True

    def _on_close(self, conn, reason, opaque) -> None:
        names = {0: "error", 1: "end of file", 2: "keepalive timeout", 3: "client request"}
        LOG.warning("libvirt connection to %s closed (%s): reconnecting",
                    self.uri, names.get(reason, reason))
        self._connected = False
        self._status = f"libvirt {self.uri} connection lost ({names.get(reason, reason)}); reconnecting"
        self._closed.set()

    def _disconnect(self) -> None:
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

    # -- reconciliation ---------------------------------------------------------------------
    def _reconcile(self, conn) -> int:
        """List all domains; report what was missed while disconnected or down."""
        started = time.time()
        listing = {}
        doms = {}
        for dom in conn.listAllDomains(0):
            try:
                uuid, name = dom.UUIDString(), dom.name()
                state, reason = dom.state()
            except Exception as exc:  # noqa: BLE001 - vanished between list and state
                LOG.debug("domain disappeared while listing: %s", exc)
                continue
            listing[uuid] = (name, state, reason)
            doms[uuid] = dom
            if self.rules.only_nova:
                self.rules.learn(uuid, dom)
        known = self.states.snapshot()
        reported = self._recently_reported()
        for m in reconcile.missed_events(known, listing):
            why = self.rules.ignored(m.uuid, m.name, doms.get(m.uuid))
            row = self.filter.match("LIFECYCLE", m.vir_domain_event)
            if why or not row:
                LOG.info("reconcile: domain %s (%s) went %s -> %s while unobserved; not "
                         "reported (%s)", m.name, m.uuid, m.before, m.now,
                         why or f"{m.vir_domain_event} not in the event filter")
            elif (m.uuid, m.vir_domain_event) in reported:
                LOG.info("reconcile: %s %s of %s already recorded; not reported twice",
                         "LIFECYCLE", m.vir_domain_event, m.uuid)
            else:
                log.event(LOG, logging.WARNING, "reconcile: domain %s (%s) went %s -> %s "
                          "while unobserved: reporting the missed LIFECYCLE %s", m.name,
                          m.uuid, m.before, m.now, m.vir_domain_event,
                          fields={"INSTANCE_UUID": m.uuid, "EVENT": "LIFECYCLE"})
                self._in_order(m.uuid, self._set_state_fn(m.uuid, m.name, listing), emit=(
                    lambda stored, m=m, row=row: self._emit_filtered(
                        "LIFECYCLE", m.vir_domain_event, m.uuid, started, {
                            "reconciled": True, "filter_row": row, "before": m.before,
                            "now": m.now, "domain": m.name}, on_stored=stored)))
        # The listing is now the truth; keep the records of vanished domains as gone
        # (after any detection of theirs still waiting for the outbox).
        for uuid, (name, state, reason) in listing.items():
            self._in_order(uuid, self._set_state_fn(uuid, name, listing))
        for uuid, rec in known.items():
            if uuid not in listing:
                self._in_order(uuid, lambda uuid=uuid: self.states.forget(uuid))
        self.states.save()
        LOG.info("reconciled %d domains with %d last known states in %.0f ms",
                 len(listing), len(known), (time.time() - started) * 1000)
        return len(listing)

    def _set_state_fn(self, uuid, name, listing):
        def apply():
            state = listing[uuid][1]
            new = reconcile.STATE_NAMES.get(state, f"state{state}")
            prev = self.states.get(uuid)
            if not prev or prev.get("state") != new:
                self.states.set(uuid, name, new)
        return apply

    def _in_order(self, uuid: str, change, emit=None) -> None:
        """Apply ``change`` (a state update) only once every detection of this domain before
        it is in the outbox. With ``emit`` (called with an on_stored callback), ``change``
        waits for that detection too."""
        with self._order_lock:
            queue = self._deferred.get(uuid)
            if emit is None:
                if queue:
                    queue.append([True, change])
                else:
                    change()
                return
            entry = [False, change]
            self._deferred.setdefault(uuid, []).append(entry)
        try:
            handed = emit(lambda: self._stored(uuid, entry))
        except BaseException:
            self._stored(uuid, entry)
            raise
        if handed is False:  # could not even be built (logged): do not block the domain
            self._stored(uuid, entry)

    def _stored(self, uuid: str, entry: list) -> None:
        with self._order_lock:
            entry[0] = True
            queue = self._deferred.get(uuid, [])
            while queue and queue[0][0]:
                try:
                    queue.pop(0)[1]()
                except Exception:  # noqa: BLE001
                    LOG.exception("domain %s: state update failed", uuid)
            if not queue:
                self._deferred.pop(uuid, None)

    def held_domains(self) -> int:
        return len(self._deferred)

    def _recently_reported(self) -> set[tuple[str, str]]:
        """(uuid, vir_domain_event) already in the outbox since the state file was last
        written: a crash between emit and flush must not make the reconcile repeat them."""
        outbox = getattr(self.emit, "outbox", None)
        if outbox is None:
            return set()
        from monitors.history import ReadModel

        since = max(self.states.saved_at - 5.0, 0.0)
        out, after = set(), 0
        while True:
            rows = ReadModel(outbox).list(type=VM, since=since, after_id=after, limit=1000)
            for r in rows:
                p = r["notification"]["payload"]
                out.add((p.get("instance_uuid"), p.get("vir_domain_event")))
            if len(rows) < 1000:
                return out
            after = rows[-1]["id"]

    # -- callbacks (event-loop thread: build the notification, emit, nothing else) ----------
    def _callback_for(self, event_id: str):
        if event_id == "LIFECYCLE":
            return lambda conn, dom, event, detail, opaque: self._on_event(
                "LIFECYCLE", dom, event, detail)
        if event_id == "WATCHDOG":
            return lambda conn, dom, action, opaque: self._on_event("WATCHDOG", dom, action, -1)
        if event_id == "IO_ERROR":
            return lambda conn, dom, src, alias, action, opaque: self._on_event(
                "IO_ERROR", dom, action, -1)
        if event_id == "IO_ERROR_REASON":
            return lambda conn, dom, src, alias, action, reason, opaque: self._on_event(
                "IO_ERROR_REASON", dom, action, -1)
        return lambda conn, dom, *rest: self._on_event(event_id, dom, -1, -1)

    def _on_event(self, event_id: str, dom, event: int, detail: int) -> None:
        now = time.time()
        self.events_seen += 1
        try:
            try:
                uuid, name = dom.UUIDString(), dom.name()
            except Exception as exc:  # noqa: BLE001
                LOG.error("libvirt %s event for a domain without UUID/name ignored: %s",
                          event_id, exc)
                return
            name_ = event_filter.vir_domain_event(event_id, event, detail)
            track = (lambda: self._track(uuid, name, event, name_)) \
                if event_id == "LIFECYCLE" else (lambda: None)
            row = self.filter.match(event_id, name_)
            why = self.rules.ignored(uuid, name, dom) if row else None
            if not row or why:
                self._in_order(uuid, track)  # nothing to report: the state moves on
            if not row and "UNKNOWN_" in name_:
                LOG.warning("libvirt %s event with an unknown type/detail (event=%s "
                            "detail=%s) for %s (%s): not in the filter, not sent", event_id,
                            event, detail, name, uuid)
                return
            if not row:
                LOG.debug("libvirt event %s %s of %s (%s): not in the filter", event_id,
                          name_, name, uuid)
                return
            if why:
                log.event(LOG, logging.INFO, "libvirt event %s %s of %s (%s) ignored: %s",
                          event_id, name_, name, uuid, why,
                          fields={"INSTANCE_UUID": uuid, "EVENT": event_id,
                                  "VIR_DOMAIN_EVENT": name_, "DECISION": "ignored"})
                return
            # The state advances only once the detection is in the outbox.
            self._in_order(uuid, track, emit=lambda stored: self._emit_filtered(
                event_id, name_, uuid, now, {"filter_row": row, "domain": name},
                on_stored=stored))
        except Exception:  # noqa: BLE001 - never let an exception into libvirt's loop
            LOG.exception("libvirt %s event (event=%s detail=%s) could not be handled",
                          event_id, event, detail)

    def _track(self, uuid: str, name: str, event: int, name_: str) -> None:
        if event == 1:  # UNDEFINED
            prev = self.states.get(uuid)
            if prev and prev.get("state") not in reconcile.ACTIVE:
                self.states.forget(uuid)
            return
        state = reconcile.LIFECYCLE_STATE.get(event)
        if state is None:  # DEFINED: a new domain is shut off
            if self.states.get(uuid) is None:
                self.states.set(uuid, name, "shutoff")
            return
        self.states.set(uuid, name, state, last_event=name_)

    def _emit_filtered(self, event_id, vir_domain_event, uuid, when: float,
                       decision: dict, on_stored=None) -> bool:
        """Emit an event the filter let through, as the filter's ``map`` says to send it
        (the decision records a mapping)."""
        to_id, to_name, mapped = self.filter.translate(event_id, vir_domain_event)
        if mapped:
            log.event(LOG, logging.WARNING, "libvirt event %s %s of %s sent as %s %s "
                      "(event filter map, %s)", event_id, vir_domain_event, uuid, to_id,
                      to_name, mapped["rule"],
                      fields={"INSTANCE_UUID": uuid, "EVENT": to_id,
                              "VIR_DOMAIN_EVENT": to_name})
            decision = {**decision, "mapped": mapped}
        return self._emit(to_id, to_name, uuid, when, decision, on_stored=on_stored)

    def _emit(self, event_id, vir_domain_event, uuid, when: float, decision: dict,
              on_stored=None) -> bool:
        try:
            n = Notification.create(VM, self.hostname, {
                "event": event_id, "instance_uuid": uuid,
                "vir_domain_event": vir_domain_event}, generated_time=_utc(when))
        except InvalidNotification as exc:
            log.event(LOG, logging.ERROR, "libvirt event %s %s of %s cannot be sent: %s",
                      event_id, vir_domain_event, uuid, exc,
                      fields={"INSTANCE_UUID": uuid, "EVENT": event_id})
            return False
        self.emit(n, decision=decision, on_stored=on_stored)
        return True

    # -- state flusher ----------------------------------------------------------------------
    def _flusher(self) -> None:
        while not self._stop.is_set():
            if self.states.wait_dirty(1.0):
                self._stop.wait(0.2)  # batch a storm into one write
                self.states.flush_if_dirty()
