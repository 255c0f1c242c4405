"""What a (re)connect must report that events missed, all in one place.

On every (re)connect, and so at daemon start, the listing of all domains is compared with
the last known states (domain_states.py): a domain that was active and is now shut off by
a crash or failure, paused by an I/O error or watchdog, or gone, yields the notification
its missed event would have produced. The table then records the listing, so nothing is
reported twice. missed_events() is the pure rule; reconcile() applies it to a connection.
"""
from __future__ import annotations

import dataclasses
import logging
import time

from monitors import log

from instancemonitor import libvirt_constants as C

LOG = logging.getLogger(__name__)

VANISHED = "STOPPED_FAILED"  # an active domain that is no longer listed


@dataclasses.dataclass
class Missed:
    uuid: str
    name: str
    vir_domain_event: str
    before: str
    now: str


def missed_events(known: dict[str, dict], listing: dict[str, tuple[str, int, int]]):
    """Pure: known = {uuid: {"state": name, ...}}, listing = {uuid: (name, state, reason)}
    → the LIFECYCLE vir_domain_events that were missed."""
    out = []
    for uuid, rec in known.items():
        if rec.get("state") not in C.ACTIVE:
            continue
        if uuid not in listing:
            out.append(Missed(uuid, rec.get("name", ""), VANISHED, rec["state"], "vanished"))
            continue
        name, state, reason = listing[uuid]
        now = C.state_name(state)
        event = None
        if state == C.SHUTOFF:
            event = C.SHUTOFF_REASON.get(reason, "STOPPED_FAILED")
        elif state == C.CRASHED:
            event = ("CRASHED_PANICKED" if reason == C.CRASHED_PANICKED_REASON
                     else "STOPPED_CRASHED")
        elif state == C.PAUSED and rec.get("state") != "paused":
            event = C.PAUSED_REASON.get(reason)
        if event:
            out.append(Missed(uuid, name, event, rec["state"], now))
    return out


def reconcile(conn, events, unobserved: str = "") -> int:
    """List all domains of ``conn``; report through ``events`` (a DomainEvents) what was
    missed while disconnected or down (``unobserved`` says why, e.g. "libvirtd hung 12s
    (...)", and goes into each report's decision); record the listing. Returns the number
    of domains."""
    started = time.time()
    states, rules = events.states, events.rules
    listing, doms = {}, {}
    for dom in conn.listAllDomains(0):
        try:
            uuid, name = dom.UUIDString(), dom.name()
            state, reason = dom.state()
        except Exception as exc:  # noqa: BLE001 - vanished between list and state
            LOG.debug("domain disappeared while listing: %s", exc)
            continue
        listing[uuid] = (name, state, reason)
        doms[uuid] = dom
        if rules.only_nova:
            rules.learn(uuid, dom)
    known = states.snapshot()

    def set_state(uuid):
        def apply():
            name, state, _ = listing[uuid]
            new = C.state_name(state)
            prev = states.get(uuid)
            if not prev or prev.get("state") != new:
                states.set(uuid, name, new)
        return apply

    for m in missed_events(known, listing):
        why = rules.ignored(m.uuid, m.name, doms.get(m.uuid))
        row = events.filter.match("LIFECYCLE", m.vir_domain_event)
        intent = states.intent_for(m.uuid, m.vir_domain_event, known.get(m.uuid))
        if why or not row:
            LOG.info("reconcile: domain %s (%s) went %s -> %s while unobserved; not "
                     "reported (%s)", m.name, m.uuid, m.before, m.now,
                     why or f"{m.vir_domain_event} not in the event filter")
            continue
        if intent and intent["stored"]:
            LOG.info("reconcile: %s %s of %s already recorded; not reported twice",
                     "LIFECYCLE", m.vir_domain_event, m.uuid)
            continue
        decision = {"reconciled": True, "filter_row": row, "before": m.before,
                    "now": m.now, "domain": m.name}
        if unobserved:
            decision["unobserved"] = unobserved
        if intent:  # its report was cut short: send it as the same notification
            decision["interrupted_report"] = True
        log.event(LOG, logging.WARNING, "reconcile: domain %s (%s) went %s -> %s while "
                  "unobserved: reporting the missed LIFECYCLE %s%s", m.name, m.uuid,
                  m.before, m.now, m.vir_domain_event,
                  " (again, as detected before the restart)" if intent else "",
                  fields={"INSTANCE_UUID": m.uuid, "EVENT": "LIFECYCLE"})
        events.report(m.uuid, "LIFECYCLE", m.vir_domain_event,
                      intent["t"] if intent else started, decision, set_state(m.uuid))
    # The listing is now the truth; keep the records of vanished domains as gone (after
    # any detection of theirs still waiting for the outbox).
    for uuid in listing:
        events.in_order(uuid, set_state(uuid))
    for uuid in known:
        if uuid not in listing:
            events.in_order(uuid, lambda uuid=uuid: states.forget(uuid))
    states.drop_loaded()
    states.save()
    LOG.info("reconciled %d domains with %d last known states in %.0f ms",
             len(listing), len(known), (time.time() - started) * 1000)
    return len(listing)
