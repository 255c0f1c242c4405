"""The decision half of the libvirt source: a domain event -> filter and domain rules ->
the VM notification, and the last known state of every domain moved in step with what the
outbox holds.

No libvirt connection here (libvirt_connection.py delivers the events). on_event() runs in
libvirt's event-loop thread: it builds the notification and emits it (one outbox
transaction), nothing else.

Ordering: per domain, a state change waits until every detection of that domain before it
is in the outbox (disk full: detections wait in the daemon's backlog). So the last known
state never runs ahead of what is durable, and a restart meanwhile reports the event again
instead of losing it (domain_states.py says how a report interrupted by a restart is told
apart from a new one).
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Callable

from monitors import log
from monitors.notification import VM, InvalidNotification, Notification

from instancemonitor import domain_rules, event_filter
from instancemonitor import libvirt_constants as C
from instancemonitor.domain_states import DomainStates

LOG = logging.getLogger(__name__)


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).replace(tzinfo=None)


def load_rules(conf) -> tuple[event_filter.EventFilter, domain_rules.DomainRules]:
    """The event filter and domain rules a configuration asks for (raises on a bad file or
    pattern, naming it)."""
    group = conf.instancemonitor
    return (event_filter.load(group.event_filter_file),
            domain_rules.DomainRules(group.ignore_domains, group.only_nova_domains))


class DomainEvents:
    def __init__(self, conf, emit: Callable, states: DomainStates):
        self.emit = emit
        self.states = states
        self.filter, self.rules = load_rules(conf)
        self.hostname = conf.hostname
        self.events_seen = 0
        self._order_lock = threading.RLock()
        # uuid -> [[stored?, state change], ...] waiting for detections the outbox has not
        # taken yet
        self._deferred: dict[str, list[list]] = {}

    def reconfigure(self, conf, new_filter, new_rules) -> None:
        self.filter, self.rules, self.hostname = new_filter, new_rules, conf.hostname

    # -- a live event (event-loop thread) ---------------------------------------------------
    def on_event(self, event_id: str, dom, event: int, detail: int) -> None:
        now = time.time()
        self.events_seen += 1
        try:
            try:
                uuid, name = dom.UUIDString(), dom.name()
            except Exception as exc:  # noqa: BLE001
                LOG.error("libvirt %s event for a domain without UUID/name ignored: %s",
                          event_id, exc)
                return
            name_ = C.vir_domain_event(event_id, event, detail)
            track = (lambda: self._track(uuid, name, event, name_)) \
                if event_id == "LIFECYCLE" else (lambda: None)
            row = self.filter.match(event_id, name_)
            why = self.rules.ignored(uuid, name, dom) if row else None
            if not row or why:
                self.in_order(uuid, track)  # nothing to report: the state moves on
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
            decision = {"filter_row": row, "domain": name}
            prev = self.states.get(uuid) if event_id == "LIFECYCLE" else None
            if prev and prev.get("state") == "running" and prev.get("at"):
                # Running again since then (a restart's STARTED is not sent): a failure now
                # is a new one, not a repeat of the last (monitors.recipient.distinct).
                decision["healthy_since"] = _utc(prev["at"]).isoformat(timespec="seconds")
            # The state advances only once the detection is in the outbox.
            self.report(uuid, event_id, name_, now, decision, track)
        except Exception:  # noqa: BLE001 - never let an exception into libvirt's loop
            LOG.exception("libvirt %s event (event=%s detail=%s) could not be handled",
                          event_id, event, detail)

    def _track(self, uuid: str, name: str, event: int, name_: str) -> None:
        if event == C.UNDEFINED:
            prev = self.states.get(uuid)
            if prev and prev.get("state") not in C.ACTIVE:
                self.states.forget(uuid)
            return
        state = C.LIFECYCLE_STATE.get(event)
        if state is None:  # DEFINED: a new domain is shut off
            if self.states.get(uuid) is None:
                self.states.set(uuid, name, "shutoff")
            return
        self.states.set(uuid, name, state, last_event=name_)

    # -- reporting --------------------------------------------------------------------------
    def report(self, uuid: str, event_id: str, vir_domain_event: str, when: float,
               decision: dict, change: Callable[[], None]) -> None:
        """Emit what the filter let through; ``change`` (the state it leads to) is applied
        once the detection is stored. A LIFECYCLE report is noted in the state journal
        first (see domain_states.py)."""
        token = self.states.intend(uuid, vir_domain_event, when) \
            if event_id == "LIFECYCLE" else None

        def apply():
            change()
            if token is not None:
                self.states.resolve(token)

        def emit(stored):
            def on_stored(_result):
                if token is not None:
                    self.states.stored(token)
                stored()
            return self._emit_filtered(event_id, vir_domain_event, uuid, when, decision,
                                       on_stored=on_stored)

        self.in_order(uuid, apply, emit=emit)

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
        try:
            n = Notification.create(VM, self.hostname, {
                "event": to_id, "instance_uuid": uuid,
                "vir_domain_event": to_name}, generated_time=_utc(when))
        except InvalidNotification as exc:
            log.event(LOG, logging.ERROR, "libvirt event %s %s of %s cannot be sent: %s",
                      to_id, to_name, uuid, exc,
                      fields={"INSTANCE_UUID": uuid, "EVENT": to_id})
            return False
        self.emit(n, decision=decision, on_stored=on_stored)
        return True

    # -- per-domain order -------------------------------------------------------------------
    def in_order(self, uuid: str, change, emit=None) -> None:
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
