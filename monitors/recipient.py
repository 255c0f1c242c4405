"""The recipient's rules: what masakari (22.0.0: masakari-api and masakari-engine) does with
each notification, in one place. Read off its source and checked with the real engine
(docs/recovery.md); every module that must know it asks here:

- ``starts_recovery``: the engine acts on it (evacuate a host, disable a compute service,
  restart an instance). The outbox's withdrawal of stale rows, the routing of actions and
  the encoding of a repeated failure all judge a notification by this.
- ``clears``: it says the subject is healthy again.
- ``withdrawal``: before a claim, whether a pending row is stale (its condition cleared).
- ``distinct``: how a *new* failure that follows a cleared one is sent so that masakari-api's
  duplicate check does not swallow it.

masakari-api answers 409 "... is duplicate" to a notification whose type, host and payload
equal one it stored with a generated_time at or after ``new.generated_time -
duplicate_notification_detection_interval`` (180 s; ``masakari/ha/api.py``,
``_is_duplicate_notification``; no upper bound, status not looked at). A host that fails,
is recovered, comes back and fails again within 3 minutes would be recovered once. The
payload schemas are closed (``additionalProperties: False``), so no field of our own can
tell the two apart; what can:

- COMPUTE_HOST STOPPED/NORMAL: ``cluster_status`` is optional and the engine never reads it
  (``masakari/engine/manager.py`` reads ``event`` and ``host_status`` only). OFFLINE and
  omitted are both true of a fenced host, so the second failure goes with the other form and
  is new to the API at once.
- Every other recovery (PROCESS STOPPED: ``process_name`` is the Nova binary the engine
  disables; VM: ``event`` and ``vir_domain_event`` are matched exactly, ``instance_uuid`` is
  looked up in Nova) has one form only, and so has a third host failure within the window:
  its generated_time is set to the end of the window (the last identical one's time plus the
  interval plus one second) and its delivery is held until that moment, so what Masakari
  stores is still true when it is sent (it is sent at its generated_time), and the reason is
  in the row's decision (``distinct``) and history.

A true repeat keeps the form of what it repeats: a re-send after a lost answer is the same
row (same generated_time and payload: 409 duplicate, counted as delivered), and a failure
detected again with no clearing in between (a second reporter, a restarted source) is
encoded like the failure it repeats, so the API still answers it 409.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any, Iterable, Mapping

from monitors.notification import COMPUTE_HOST, PROCESS, VM, Notification

# What masakari-engine 22 recovers among VM events (masakari/engine/instance_events.py);
# every other VM event is stored and ignored.
VM_RECOVERED = frozenset({("LIFECYCLE", "STOPPED_FAILED"), ("IO_ERROR", "IO_ERROR_REPORT"),
                          ("QEMU_GUEST_AGENT_ERROR", "STOPPED_FAILED")})
RUNNING_AGAIN = ("STARTED_", "RESUMED_")
DUPLICATE_WINDOW = 180  # masakari-api's duplicate_notification_detection_interval default
MARGIN = dt.timedelta(seconds=1)  # past the window's end: the API compares with >=
# How long after a peer's fencing its report may have been generated (polls, samples).
REPORT_SLACK = dt.timedelta(seconds=30)


def fenced_host_failure(notification: Notification) -> bool:
    """COMPUTE_HOST STOPPED with host_status NORMAL: fencing is confirmed, the engine
    evacuates the host; the one notification after which forcing a host down is safe."""
    p = notification.payload
    return (notification.type == COMPUTE_HOST and p.get("event") == "STOPPED"
            and p.get("host_status") == "NORMAL")


def starts_recovery(ntype: str, payload: Mapping[str, str]) -> bool:
    """Whether the engine acts on this notification: COMPUTE_HOST STOPPED with host_status
    NORMAL (evacuation; a missing host_status is ignored by the engine, like UNKNOWN),
    PROCESS STOPPED (compute service disabled), a VM event it recovers (instance stopped
    and started)."""
    if ntype == VM:
        return (payload.get("event"), payload.get("vir_domain_event")) in VM_RECOVERED
    if payload.get("event") != "STOPPED":
        return False
    return ntype == PROCESS or payload.get("host_status") == "NORMAL"


def clears(ntype: str, payload: Mapping[str, str]) -> bool:
    """Whether this notification says its subject is healthy again."""
    if ntype == VM:
        return payload.get("event") == "LIFECYCLE" and str(
            payload.get("vir_domain_event", "")).startswith(RUNNING_AGAIN)
    return payload.get("event") == "STARTED"


# -- stale rows: withdrawn before a claim ----------------------------------------------------
def withdrawal(row) -> dict | None:
    """Whether a pending row (a monitors.outbox.Candidate) is stale, and why (None: deliver
    it). Two cases, same subject:

    - it would start a recovery and a newer notification says the subject is healthy again:
      delivering it would evacuate a host, disable a service or restart a VM that is fine;
    - it is that "healthy again" notification and the failure right before it (to the same
      driver) was withdrawn: there is nothing to clear, the recipient never heard of it.

    Nothing already delivered is touched: once a STOPPED went out, its STARTED goes too."""
    if starts_recovery(row.type, row.payload):
        for later_id, later_type, later_payload in row.later():
            if clears(later_type, later_payload):
                return {"by": later_id, "why": "condition cleared before delivery: "
                        f"notification {later_id} says the subject is healthy again"}
    elif clears(row.type, row.payload):
        before = row.before()
        if before is not None and before[1] == "superseded":
            return {"by": before[0], "why": f"the failure it clears (notification "
                    f"{before[0]}) was withdrawn before delivery: nothing to clear",
                    "driver_only": True}
    return None


# -- a new failure after a cleared one: not a duplicate ---------------------------------------
@dataclasses.dataclass(frozen=True)
class Earlier:
    """One earlier notification of the same subject, as the outbox recorded it.
    ``masakari``: its Masakari delivery's state (None: it was not for Masakari)."""
    id: int
    type: str
    payload: dict
    generated_time: dt.datetime
    masakari: str | None


@dataclasses.dataclass(frozen=True)
class Encoding:
    """How a notification is sent: possibly another form of its payload, or a
    generated_time past the duplicate window with its delivery held until then
    (``not_before``, epoch seconds); ``why`` goes into the row's decision."""
    notification: Notification
    not_before: float | None = None
    why: dict | None = None


def variants(ntype: str, payload: Mapping[str, str]) -> list[dict]:
    """The forms of a payload the engine treats alike, the given one first: a host's
    cluster_status given or omitted (the engine never reads it; OFFLINE for a failed host,
    ONLINE for one back)."""
    payload = dict(payload)
    if ntype == COMPUTE_HOST and (starts_recovery(ntype, payload) or clears(ntype, payload)):
        other = dict(payload)
        if "cluster_status" in other:
            del other["cluster_status"]
        else:
            other["cluster_status"] = "OFFLINE" if payload["event"] == "STOPPED" else "ONLINE"
        return [payload, other]
    return [payload]


def _form(payload: Mapping[str, str], canonical: Mapping[str, str]) -> str:
    if dict(payload) == dict(canonical):
        return "as detected"
    if "cluster_status" in canonical and "cluster_status" not in payload:
        return "with cluster_status omitted"
    return f"with cluster_status {payload.get('cluster_status')}"


def _key(payload: Mapping[str, str]) -> str:
    return json.dumps(dict(payload), sort_keys=True)


def distinct(notification: Notification, earlier: Iterable[Earlier],
             window: float = DUPLICATE_WINDOW,
             healthy_since: dt.datetime | None = None,
             earlier_failure: dt.datetime | None = None) -> Encoding:
    """How to send ``notification`` so that Masakari treats it as what it is.

    earlier: the subject's notifications whose generated_time is within ``window`` seconds
    before this one's (or after it), newest first. Only those that are or may be at Masakari
    count (Masakari-bound, pending or delivered). A recovery-starting notification is a
    *new* failure when the newest of them that starts a recovery or clears is a clearing,
    or when its source saw the subject healthy after that failure was generated
    (``healthy_since``, naive UTC: e.g. a domain running again, whose STARTED is not sent);
    then it gets the first form of its payload that no such row used within the window, or,
    when every form is taken, a generated_time past the window and a delivery held until
    then. A repeat (the newest is the same failure) is encoded like the failure it repeats.
    ``earlier_failure`` (naive UTC): the source knows of an earlier failure of the subject
    that this outbox may not hold (another node reported it: a peer's previous fencing);
    when no failure row of ours is within the window it counts as one sent in the first
    form, at that time plus ``REPORT_SLACK`` (erring towards "taken": the other form is
    as good).
    A clearing (STARTED) after a failure gets a free form too when there is one, never a
    delay: the engine does nothing with it. Everything else is sent as it is."""
    failure = starts_recovery(notification.type, notification.payload)
    if not window or not (failure or clears(notification.type, notification.payload)):
        return Encoding(notification)
    forms = variants(notification.type, notification.payload)
    rows = [e for e in earlier if e.masakari in ("pending", "delivered")
            and e.type == notification.type]
    if earlier_failure is not None and failure and not any(
            starts_recovery(e.type, e.payload) for e in rows):
        rows.append(Earlier(0, notification.type, forms[0], earlier_failure + REPORT_SLACK,
                            "delivered"))
    relevant = next((e for e in rows if starts_recovery(e.type, e.payload)
                     or clears(e.type, e.payload)), None)
    if relevant is None:
        return Encoding(notification)
    relevant_failure = starts_recovery(relevant.type, relevant.payload)
    seen_healthy = (failure and relevant_failure and healthy_since is not None
                    and healthy_since > relevant.generated_time)
    if relevant_failure == failure and not seen_healthy:
        if relevant.payload in forms and relevant.payload != dict(notification.payload):
            why = {"repeat_of": relevant.id, "sent": _form(relevant.payload, forms[0]),
                   "why": f"the failure of notification {relevant.id} detected again "
                          "(no clearing in between): sent in the same form, so Masakari "
                          "answers it as the duplicate it is"}
            return Encoding(dataclasses.replace(notification, payload=relevant.payload), None,
                            why)
        return Encoding(notification)
    span = dt.timedelta(seconds=window)
    since = notification.generated_time - span
    last_use: dict[str, tuple[dt.datetime, int]] = {}
    for e in rows:
        if e.generated_time >= since:
            k = _key(e.payload)
            if k not in last_use or e.generated_time > last_use[k][0]:
                last_use[k] = (e.generated_time, e.id)
    if _key(forms[0]) not in last_use:
        return Encoding(notification)  # nothing identical within the window: no conflict
    if seen_healthy:
        base = {"healthy_since": healthy_since.isoformat(timespec="seconds"),
                "window": window,
                "why": "a new failure: its source saw the subject healthy at "
                       f"{healthy_since.isoformat(timespec='seconds')}, after notification "
                       f"{relevant.id}"}
    elif failure:
        base = {"after": relevant.id, "window": window,
                "why": f"a new failure: notification {relevant.id} said the subject was "
                       "healthy again"}
    else:
        base = {"after": relevant.id, "window": window,
                "why": f"back after the failure of notification {relevant.id}"}
    for form in forms:
        if _key(form) not in last_use:
            same = last_use[_key(forms[0])]
            return Encoding(
                dataclasses.replace(notification, payload=form), None,
                {**base, "same_payload": same[1], "sent": _form(form, forms[0]),
                 "why": base["why"] + f"; notification {same[1]} with the same payload "
                        f"(generated {same[0].isoformat(timespec='seconds')}) is within "
                        f"Masakari's {window:g} s duplicate window: sent "
                        f"{_form(form, forms[0])}, which the engine treats alike"})
    if not failure:
        # The engine does nothing with a STARTED: never delay one (it would hold the
        # subject's later rows behind it); Masakari may answer it 409 duplicate.
        return Encoding(notification)
    form = min(forms, key=lambda f: last_use[_key(f)][0])
    when, same = last_use[_key(form)]
    moved = max(when + span + MARGIN, notification.generated_time)
    epoch = moved.replace(tzinfo=dt.timezone.utc).timestamp()
    return Encoding(
        dataclasses.replace(notification, payload=form, generated_time=moved), epoch,
        {**base, "same_payload": same, "sent": _form(form, forms[0]),
         "detected_at": notification.time_text, "generated_time": moved.isoformat(),
         "why": base["why"] + f"; notification {same} with the same payload (generated "
                f"{when.isoformat(timespec='seconds')}) is within Masakari's {window:g} s "
                "duplicate window and no other form of the payload is free: generated_time "
                f"set to {moved.isoformat(timespec='seconds')} (the window's end) and the "
                "delivery held until then"})


def earlier_since(notification: Notification, window: float) -> str:
    """The generated_time text from which earlier rows matter to ``distinct``."""
    return (notification.generated_time - dt.timedelta(seconds=window)).isoformat(
        timespec="microseconds")


def earlier_rows(rows: Iterable[Mapping[str, Any]]) -> list[Earlier]:
    """Earlier from the outbox's rows (id, type, payload text, generated_time, masakari)."""
    from monitors.notification import parse_time

    return [Earlier(r["id"], r["type"], json.loads(r["payload"]),
                    parse_time(r["generated_time"]), r["masakari"]) for r in rows]
