"""Which actions a detection asks for, besides the notification itself: the routing
decision, made where a notification enters the outbox (put(): the daemons' Emitter and
``ha-monitors notify``, which the Pacemaker alert agent calls), never in a driver.

Actions are drivers like the Masakari one (durable, ordered per subject, retried, visible
in history and the journal); this module only decides which of them a row goes to, and
records why in the row's decision:

- ``nova-force-down`` for a COMPUTE_HOST STOPPED with host_status NORMAL — fencing is
  confirmed, the only verdict that lets Masakari evacuate — when ``[nova] force_down`` is
  on. It goes *first*: the Masakari delivery of the same row waits for it (at most
  ``[nova] force_down_hold``), so the engine's evacuation finds the service already down.
  A host reported UNKNOWN (not fenced) is never forced down, nor a NORMAL that
  ``[host] disable_ipmi_check`` produced without fencing evidence.
- ``resurrect`` for a COMPUTE_HOST STARTED that follows a STOPPED with host_status NORMAL
  (a host that was fenced and recovered is back), or a PROCESS STARTED that follows a
  PROCESS STOPPED of the same process, when ``[nova] resurrect`` is on.
"""
from __future__ import annotations

import dataclasses

from monitors import recipient
from monitors.notification import COMPUTE_HOST, PROCESS, Notification, parse_time
from monitors.recipient import fenced_host_failure

FORCE_DOWN = "nova-force-down"
RESURRECT = "resurrect"
ACTIONS = (FORCE_DOWN, RESURRECT)
MASAKARI = "masakari"


def enabled(conf) -> list[str]:
    """The action drivers this configuration can route to (the delivery worker loads
    them beside [delivery] drivers)."""
    out = []
    if conf.nova.force_down:
        out.append(FORCE_DOWN)
    if conf.nova.resurrect:
        out.append(RESURRECT)
    return out


def delivery_drivers(conf) -> list[str]:
    """Every driver a delivery worker of this configuration loads: [delivery] drivers and
    the enabled actions (at start and on reload alike)."""
    return [*conf.delivery.drivers, *enabled(conf)]


def route(conf, notification: Notification, previous: dict | None
          ) -> tuple[list[str], list[str], dict]:
    """(action drivers, those that go first, why) for one notification.

    previous: the outbox's latest earlier notification about the same subject
    (Outbox.previous), as the resurrect decision needs to know what was reported before."""
    actions, first, why = [], [], {}
    if conf.nova.force_down and fenced_host_failure(notification):
        if conf.host.disable_ipmi_check:
            # NORMAL without fencing evidence (masakari-monitors' compatibility switch):
            # Masakari will act on it, but we do not add a force-down to an unproven verdict.
            why[FORCE_DOWN] = ("not forced down: [host] disable_ipmi_check = true makes "
                               "host_status NORMAL without fencing evidence")
        else:
            actions.append(FORCE_DOWN)
            first.append(FORCE_DOWN)
            why[FORCE_DOWN] = ("fencing confirmed (host_status NORMAL): force the service "
                               "down")
    if (conf.nova.resurrect and notification.type in (COMPUTE_HOST, PROCESS)
            and notification.payload.get("event") == "STARTED" and previous):
        before = Notification.from_dict(previous["notification"])
        # Masakari may have acted on it unless its delivery ended otherwise (rejected,
        # expired, withdrawn): pending counts, it may still be delivered before this row.
        acted = all(d["state"] in ("pending", "delivered")
                    for d in previous.get("deliveries", ()) if d["driver"] == "masakari")
        if acted and before.payload.get("event") == "STOPPED" and (
                before.type == PROCESS or fenced_host_failure(before)):
            actions.append(RESURRECT)
            why[RESURRECT] = (f"back after notification {previous['id']} "
                              f"({before.type} STOPPED"
                              + (", fenced" if before.type == COMPUTE_HOST else "")
                              + "): put it back in service")
    return actions, first, why


def _asks_previous(conf, notification: Notification) -> bool:
    """Whether route() looks at ``previous`` for this notification (resurrect only)."""
    return bool(conf.nova.resurrect and notification.type in (COMPUTE_HOST, PROCESS)
                and notification.payload.get("event") == "STARTED")


@dataclasses.dataclass(frozen=True)
class Plan:
    """The row a detection becomes: the notification as it will be sent (see
    monitors.recipient.distinct), its drivers (those in ``first`` go first), the decision
    to record, and per driver the time before which it is not due."""
    notification: Notification
    drivers: list[str]
    decision: dict | None
    first: list[str]
    not_before: dict[str, float]


def _encode(outbox, conf, notification: Notification, drivers: list[str],
            decision: dict | None) -> tuple[recipient.Encoding, dict | None]:
    """A failure (or its clearing) for Masakari that follows the opposite of the same
    subject within the recipient's duplicate window is encoded so that masakari-api does not
    drop it as a duplicate (monitors.recipient.distinct)."""
    window = conf.delivery.duplicate_notification_detection_interval
    if (MASAKARI not in drivers or not window
            or not (recipient.starts_recovery(notification.type, notification.payload)
                    or recipient.clears(notification.type, notification.payload))):
        return recipient.Encoding(notification), decision
    try:
        rows = outbox.recent(notification, recipient.earlier_since(notification, window))
    except Exception as exc:  # noqa: BLE001 - the detection must still be recorded
        return recipient.Encoding(notification), {
            **(decision or {}), "distinct_unknown": f"outbox not readable: {exc}"}
    encoding = recipient.distinct(notification, recipient.earlier_rows(rows), window,
                                  _when(decision, "healthy_since"),
                                  _when(decision, "earlier_failure_at"))
    if encoding.why:
        decision = {**(decision or {}), "distinct": encoding.why}
    return encoding, decision


def _when(decision: dict | None, key: str):
    """A time a source put in the decision for recipient.distinct (ISO UTC):
    ``healthy_since``, when the subject was last seen healthy before this failure (a domain
    running again, whose STARTED is not sent to Masakari; a peer seen online), and
    ``earlier_failure_at``, an earlier failure of the subject that another node may have
    reported (a peer's previous fencing)."""
    text = (decision or {}).get(key)
    if not text:
        return None
    try:
        return parse_time(text, f"decision.{key}")
    except ValueError:
        return None


def plan(outbox, conf, notification: Notification, decision: dict | None = None,
         drivers: list[str] | None = None) -> Plan:
    """The row a detection becomes: the configured drivers plus the actions route() asks
    for, with why in the decision (``actions``), and the notification in the form the
    recipient must get it (``distinct``). An outbox that cannot be read (it may be the very
    fault the caller is about to hold the detection for) is decided as having no earlier
    notification: no resurrect, sent as detected, and said."""
    previous = None
    if _asks_previous(conf, notification):  # one read per STARTED, none per VM event
        try:
            previous = outbox.previous(notification)
        except Exception as exc:  # noqa: BLE001 - the detection must still be recorded
            decision = {**(decision or {}), "previous_unknown": f"outbox not readable: {exc}"}
    extra, first, why = route(conf, notification, previous)
    if why:
        decision = {**(decision or {}), "actions": why}
    configured = list(drivers or conf.delivery.drivers)
    encoding, decision = _encode(outbox, conf, notification, configured, decision)
    not_before = {MASAKARI: encoding.not_before} if encoding.not_before else {}
    return Plan(encoding.notification, [*first, *configured, *extra], decision, first,
                not_before)


def put(outbox, conf, notification: Notification, *, source: str,
        decision: dict | None = None, drivers: list[str] | None = None):
    """Route, then record durably: how ``ha-monitors notify`` (which the Pacemaker alert
    agent calls) enters the outbox; the daemons' Emitter plans the same way and puts
    through its memory backlog."""
    p = plan(outbox, conf, notification, decision, drivers)
    return outbox.put(p.notification, source=source, drivers=p.drivers,
                      decision=p.decision, first=p.first, not_before=p.not_before)
