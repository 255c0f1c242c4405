"""The read model of the outbox, and ``ha-monitors history``.

The outbox (monitors/outbox.py) is storage: put, claim, finish, and ``query()`` for rows.
What operators see of it is shaped here, once: ``ReadModel`` gives notifications with
their deliveries and history, the history tail, the counts and ages that ``status``,
``metrics``, the daemons' status files and ``ha-monitors outbox`` report.

Every alert is a notification row with its detection source, the decision that produced it
(filter row, matrix row, restart attempts, ...) and its history (duplicates, every delivery
attempt and the recipient's answer, the API's notification_uuid, and what the engine then
did with it: monitors/follow.py). Nothing here keeps state of its own: the outbox is the
record, this module only reads and renders it (table or JSON), and ``--follow`` tails the
outbox's history table.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import signal
import sys
import threading
import time
from typing import Iterable, TextIO

from monitors.notification import Notification
from monitors.outbox import Outbox
from monitors.states import STATES, Outcome

# A delivery held back by its recipient: pending, last answered Outcome.HELD (the outbox
# stores the classified answer); correlated with the notifications row ``n``.
_HELD = ("d.notification_id = n.id AND d.state = 'pending' "
         f"AND d.last_outcome = '{Outcome.HELD}'")
_DELIVERY_KEYS = ("id", "driver", "state", "attempts", "next_attempt_at", "remote_id",
                  "last_status", "last_message", "last_outcome", "lease_owner", "stage")


class ReadModel:
    """What operators see of one outbox: read-only, computed from its rows at each call
    (no second bookkeeping that could drift from them)."""

    def __init__(self, box: Outbox):
        self.box = box

    def depth(self) -> int:
        """Notifications still pending."""
        return self.box.query(
            "SELECT COUNT(*) FROM notifications WHERE state = 'pending'")[0][0]

    def counts(self) -> dict[str, int]:
        rows = self.box.query("SELECT state, COUNT(*) FROM notifications GROUP BY state")
        return {state: 0 for state in STATES} | {r[0]: r[1] for r in rows}

    def oldest_pending_age(self, exclude_held: bool = False) -> float:
        """Since detection, or since the operator's last ``outbox retry`` of the row: a row
        retried after a day is not a day late. exclude_held: leave out notifications the
        recipient holds back (host on maintenance): they wait for an operator, not for
        delivery, and are reported apart."""
        # ... or since the end of the recipient's duplicate window it was held for
        # (recipient.distinct: ``not_before`` in its detection): not late before that.
        sql = ("SELECT MIN(MAX(n.created_at, COALESCE((SELECT MAX(h.at) FROM history h WHERE "
               "h.notification_id = n.id AND h.kind = 'retry'), 0), COALESCE((SELECT "
               "MAX(json_extract(h.detail, '$.not_before.masakari')) FROM history h WHERE "
               "h.notification_id = n.id AND h.kind = 'detected'), 0))) FROM notifications n "
               "WHERE n.state = 'pending'")
        if exclude_held:
            sql += f" AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE {_HELD})"
        row = self.box.query(sql)
        return max(time.time() - row[0][0], 0.0) if row[0][0] else 0.0

    def held(self, limit: int = 20) -> list[dict]:
        """Pending deliveries whose last answer held them back (Masakari 409 that is not a
        duplicate: host on maintenance, or another conflict), oldest first."""
        rows = self.box.query(
            "SELECT n.id, n.type, n.hostname, n.created_at, d.driver, d.last_message, "
            f"d.next_attempt_at FROM notifications n JOIN deliveries d ON {_HELD} "
            "ORDER BY n.id LIMIT ?", (limit,))
        return [dict(r) for r in rows]

    def acknowledged(self, ids: Iterable[int]) -> set[int]:
        """Which of these notifications were acknowledged after their last answer/retry."""
        ids = list(ids)
        if not ids:
            return set()
        rows = self.box.query(
            "SELECT notification_id, MAX(CASE WHEN kind = 'acknowledged' THEN id END) AS ack,"
            " MAX(CASE WHEN kind IN ('answer', 'retry') THEN id END) AS last FROM history "
            f"WHERE notification_id IN ({','.join('?' * len(ids))}) GROUP BY notification_id",
            ids)
        return {r["notification_id"] for r in rows
                if r["ack"] is not None and r["ack"] > (r["last"] or 0)}

    def list(self, *, state: str | None = None, since: float | None = None,
             type: str | None = None, hostname: str | None = None, after_id: int = 0,
             limit: int = 1000, newest: bool = False, with_history: bool = False
             ) -> list[dict]:
        """Notifications in id order; newest=True: the last ``limit`` of them (still in id
        order); with_history: each with its history, as get() gives it."""
        clauses, args = ["id > ?"], [after_id]
        for column, value in (("state", state), ("type", type), ("hostname", hostname)):
            if value:
                clauses.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            clauses.append("created_at >= ?")
            args.append(since)
        rows = self.box.query(f"SELECT * FROM notifications WHERE {' AND '.join(clauses)} "
                              f"ORDER BY id {'DESC' if newest else ''} LIMIT ?",
                              [*args, limit])
        return [self._describe(r, with_history) for r in sorted(rows, key=lambda r: r["id"])]

    def get(self, notification_id: int) -> dict | None:
        """One notification with its deliveries and history (None: no such id)."""
        rows = self.box.query("SELECT * FROM notifications WHERE id = ?", (notification_id,))
        if not rows:
            return None
        return self._describe(rows[0], with_history=True)

    def events(self, *, after_id: int = 0, type: str | None = None,
               hostname: str | None = None, limit: int = 1000) -> list[dict]:
        """History rows (detected, duplicate, attempt, answer, retry) after ``after_id``, with
        their notification's type and hostname: what ``ha-monitors history --follow`` tails."""
        clauses, args = ["h.id > ?"], [after_id]
        for column, value in (("n.type", type), ("n.hostname", hostname)):
            if value:
                clauses.append(f"{column} = ?")
                args.append(value)
        rows = self.box.query(
            "SELECT h.*, n.type, n.hostname FROM history h JOIN notifications n "
            f"ON n.id = h.notification_id WHERE {' AND '.join(clauses)} ORDER BY h.id LIMIT ?",
            [*args, limit])
        return [{**_history_entry(r), "notification_id": r["notification_id"],
                 "type": r["type"], "hostname": r["hostname"]} for r in rows]

    def last_event_id(self) -> int:
        return self.box.query("SELECT COALESCE(MAX(id), 0) FROM history")[0][0]

    # -- what the recipient did with delivered notifications (monitors/follow.py) ------------
    def recoveries(self, ids: Iterable[int]) -> dict[int, dict]:
        """The recovery follow-ups of these notifications, by delivery id: the status last
        seen (None: none read yet), polls, ended (None: still followed, 'final', 'bound':
        given up), when it was last polled, and whether an operator acknowledged it since."""
        ids = list(ids)
        if not ids:
            return {}
        rows = self.box.query(
            "SELECT r.*, (SELECT MAX(h.id) FROM history h WHERE h.notification_id = "
            "r.notification_id AND h.kind = 'acknowledged') > COALESCE((SELECT MAX(h.id) "
            "FROM history h WHERE h.delivery_id = r.delivery_id AND h.kind = 'recovery'), 0)"
            " AS acknowledged FROM recoveries r WHERE r.notification_id IN "
            f"({','.join('?' * len(ids))})", ids)
        return {r["delivery_id"]: _recovery(r) for r in rows}

    def recovery_list(self, since: float | None = None, limit: int = 1000) -> list[dict]:
        """Follow-ups of notifications delivered since ``since``, oldest first, each with
        its notification's type and hostname: what ``status`` judges."""
        rows = self.box.query(
            "SELECT r.notification_id FROM recoveries r WHERE r.delivered_at >= ? "
            "ORDER BY r.delivery_id LIMIT ?", (since or 0.0, limit))
        found = self.recoveries(r[0] for r in rows)
        kinds = {r["id"]: (r["type"], r["hostname"]) for r in self.box.query(
            "SELECT id, type, hostname FROM notifications WHERE id IN "
            f"({','.join('?' * len(found))})", [f["notification_id"] for f in found.values()])
        } if found else {}
        return [{**f, "type": kinds[f["notification_id"]][0],
                 "hostname": kinds[f["notification_id"]][1]}
                for _, f in sorted(found.items()) if f["notification_id"] in kinds]

    def recovery_counts(self) -> dict[tuple[str, str], int]:
        """Followed notifications in the outbox by (type, status last seen; 'unknown' when
        none could be read)."""
        rows = self.box.query(
            "SELECT n.type, COALESCE(r.status, 'unknown'), COUNT(*) FROM recoveries r JOIN "
            "notifications n ON n.id = r.notification_id GROUP BY 1, 2")
        return {(r[0], r[1]): r[2] for r in rows}

    def _describe(self, row, with_history: bool = False) -> dict:
        deliveries = [{k: d[k] for k in _DELIVERY_KEYS} for d in self.box.query(
            "SELECT * FROM deliveries WHERE notification_id = ? ORDER BY id", (row["id"],))]
        followed = self.recoveries([row["id"]])
        for d in deliveries:
            d["recovery"] = followed.get(d["id"])
        out = {"id": row["id"], "created_at": row["created_at"], "state": row["state"],
               "source": row["source"], "decision": json.loads(row["decision"]),
               "notification": Notification(row["type"], row["hostname"],
                                            row["generated_time"],
                                            json.loads(row["payload"])).to_dict(),
               "deliveries": deliveries}
        if with_history:
            out["history"] = [_history_entry(r) for r in self.box.query(
                "SELECT * FROM history WHERE notification_id = ? ORDER BY id", (row["id"],))]
        return out


def _recovery(row) -> dict:
    return {"notification_id": row["notification_id"], "delivery_id": row["delivery_id"],
            "driver": row["driver"], "remote_id": row["remote_id"], "status": row["status"],
            "polls": row["polls"], "ended": row["ended"], "last_error": row["last_error"],
            "delivered_at": row["delivered_at"], "updated_at": row["updated_at"],
            "next_at": None if row["ended"] else row["next_at"],
            "acknowledged": bool(row["acknowledged"])}


def _history_entry(row) -> dict:
    return {"id": row["id"], "at": row["at"], "kind": row["kind"],
            "delivery_id": row["delivery_id"], **json.loads(row["detail"])}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float | None = None, option: str = "--since") -> float:
    """``10m``, ``2h``, ``1d`` ago, or an ISO 8601 time (local time if naive, like
    ``journalctl --since``). Raises ValueError naming the accepted forms. Every time an
    operator types (``history --since``, ``outbox purge --delivered-before``) goes
    through here, so they all read a naive time the same way."""
    now = time.time() if now is None else now
    match = _DURATION.match(text)
    if match:
        return now - float(match.group(1)) * _UNIT[match.group(2)]
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected a duration (30s, 10m, 2h, 1d, 1w) or an "
                         "ISO 8601 time (2026-11-24T10:00, local time if no offset)") from None
    return moment.timestamp()  # naive → local time


def _when(ts: float | None, precise: bool = False) -> str:
    if not ts:
        return "-"
    moment = dt.datetime.fromtimestamp(ts)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (f".{moment.microsecond // 1000:03d}"
                                                     if precise else "")


def subject(notification: dict) -> str:
    """What the alert is about: the VM, the process, or the host."""
    payload = notification["payload"]
    if notification["type"] == "VM":
        return payload.get("instance_uuid", "?")
    if notification["type"] == "PROCESS":
        return payload.get("process_name", "?")
    return notification["hostname"]


def event(notification: dict) -> str:
    payload = notification["payload"]
    parts = [payload.get("event", "?")]
    for key in ("vir_domain_event", "host_status", "cluster_status"):
        if payload.get(key):
            parts.append(payload[key])
    return "/".join(parts)


# What decided comes first, so a bounded line never cuts it off.
_FIRST = ("row", "rule", "filter_row", "action", "actions", "distinct", "attempts", "driver",
          "fencing", "reporter")


def _compact(value, limit: int = 300) -> str:
    """A decision dict as ``key=value`` pairs, one line, bounded."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (_FIRST.index(k) if k in _FIRST else len(_FIRST)))
        text = " ".join(f"{k}={_nested(value[k], limit)}" for k in keys)
    else:
        text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _nested(value, limit: int) -> str:
    if isinstance(value, dict):
        return "{" + _compact(value, limit) + "}"
    if isinstance(value, list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def describe_event(entry: dict) -> str:
    """One history row in words: what the operator needs from it."""
    kind = entry["kind"]
    if kind == "detected":
        text = f"detected by {entry.get('source', '?')}; to {', '.join(entry.get('drivers', []))}"
        for driver, until in sorted((entry.get("not_before") or {}).items()):
            text += (f"; {driver} held until {_when(until)} (the recipient's duplicate "
                     "window: see decision.distinct)")
        return text
    if kind == "duplicate":
        return (f"detected again by {entry.get('source', '?')} (generated_time "
                f"{entry.get('generated_time', '?')}): not queued twice")
    if kind == "attempt":
        return f"{entry.get('driver')}: attempt {entry.get('attempt')} (by pid {str(entry.get('by', '?')).split(':')[0]})"
    if kind == "answer":
        status = entry.get("status")
        text = (f"{entry.get('driver')}: {entry.get('outcome')} "
                f"({status if status is not None else 'no answer'})")
        if entry.get("remote_id"):
            text += f" notification_uuid {entry['remote_id']}"
        if entry.get("outcome") not in ("delivered", "duplicate") and entry.get("message"):
            text += f": {entry['message'][:120]}"
        if entry.get("state") == "pending" and "retry_in" in entry:
            text += f"; retry in {entry['retry_in']}s"
        elif entry.get("state") in ("rejected", "expired"):
            text += f" -> {entry['state'].upper()}"
        return text
    if kind == "fencing":
        text = (f"fencing ({entry.get('method')}) "
                f"{'requested' if entry.get('ok') else 'FAILED'}: {entry.get('action') or '-'}")
        return text + (f": {str(entry['detail'])[:160]}" if entry.get("detail") else "")
    if kind == "superseded":
        return f"SUPERSEDED, not delivered: {entry.get('why', '?')}"
    if kind == "retry":
        return f"operator retry: {entry.get('deliveries')} delivery(ies) queued again"
    if kind == "recovery":
        return describe_recovery(entry)
    if kind == "acknowledged":
        note = f": {entry['note']}" if entry.get("note") else ""
        if entry.get("recovery"):
            return f"acknowledged by the operator (recovery {entry['recovery']}){note}"
        return f"acknowledged by the operator ({entry.get('state')}, not retried){note}"
    return _compact({k: v for k, v in entry.items() if k not in ("id", "at", "kind")})


def describe_recovery(entry: dict) -> str:
    """A ``recovery`` history row (monitors/follow.py): what the engine did, when."""
    status = entry.get("status") or "unknown"
    shown = status.upper() if status in ("failed", "error") else status
    when = f"{entry.get('after', 0):.1f}s after delivery, poll {entry.get('polls')}"
    head = f"{entry.get('driver')}: recovery"
    if entry.get("ended") == "bound":
        text = (f"{head} {shown}, no final status within {entry.get('bound', 0):g}s "
                f"({when}): no longer followed")
        return text + (f"; last error: {entry['error'][:160]}" if entry.get("error") else "")
    if entry.get("error"):
        return f"{head} status unreadable ({when}): {entry['error'][:160]}"
    return f"{head} {shown} ({when})"


def _recovery_column(row: dict) -> str:
    """The engine's outcome of each followed delivery: its status (``...`` while followed,
    ``?`` when following gave up), ``-`` when not followed."""
    out = []
    for d in row["deliveries"]:
        r = d.get("recovery")
        if not r:
            continue
        text = r["status"] or "unknown"
        if r["ended"] is None:
            text += "..."
        elif r["ended"] == "bound":
            text += "?"
        if r["acknowledged"]:
            text += "(acked)"
        out.append(text)
    return " ".join(out) or "-"


def _api_column(row: dict) -> str:
    out = []
    for d in row["deliveries"]:
        text = f"{d['driver']}:{d['state']}"
        if d["last_status"]:
            text += f"({d['last_status']})"
        if d["remote_id"]:
            text += f" {d['remote_id']}"
        out.append(text)
    return " ".join(out)


HEADER = ("ID", "DETECTED", "TYPE", "HOST", "SUBJECT", "EVENT", "STATE", "RECOVERY",
          "DELIVERY")


def _summary(row: dict) -> tuple[str, ...]:
    n = row["notification"]
    return (f"#{row['id']}", _when(row["created_at"]), n["type"], n["hostname"], subject(n),
            event(n), row["state"], _recovery_column(row), _api_column(row))


def render_table(rows: list[dict], out: TextIO, brief: bool = False) -> None:
    """A table, and under each alert (unless brief) its source, decision and timeline."""
    if not rows:
        print("no alerts", file=out)
        return
    lines = [HEADER, *(_summary(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER) - 1)]

    def fmt(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths + [0])).rstrip()

    print(fmt(HEADER), file=out)
    for row, line in zip(rows, lines[1:]):
        print(fmt(line), file=out)
        if brief:
            continue
        print(f"      source    {row['source']}", file=out)
        decision = dict(row["decision"])
        distinct = decision.pop("distinct", None)
        if decision:
            print(f"      decision  {_compact(decision)}", file=out)
        if isinstance(distinct, dict) and distinct.get("why"):
            # how it was sent past the recipient's duplicate check (recipient.distinct)
            print(f"      sent as   {distinct['why']}", file=out)
        for entry in row.get("history", []):
            print(f"      {_when(entry['at'], precise=True)[11:]}  {describe_event(entry)}",
                  file=out)


def render_outbox(rows: list[dict], out: TextIO) -> None:
    """``ha-monitors outbox list``: one line per notification, its payload and deliveries."""
    header = ("ID", "CREATED", "STATE", "TYPE", "HOSTNAME", "PAYLOAD", "DELIVERIES")
    lines = [header]
    for r in rows:
        n = r["notification"]
        deliveries = " ".join(f"{d['driver']}:{d['state']}/{d['attempts']}"
                              + (f"({d['last_status']})" if d["last_status"] else "")
                              for d in r["deliveries"])
        lines.append((str(r["id"]), _when(r["created_at"]), r["state"], n["type"],
                      n["hostname"], json.dumps(n["payload"], sort_keys=True), deliveries))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip(), file=out)


def render_outbox_row(row: dict, out: TextIO) -> None:
    """``ha-monitors outbox show ID``: its line, then every history row with its details."""
    render_outbox([row], out)
    for h in row["history"]:
        detail = {k: v for k, v in h.items() if k not in ("id", "at", "kind", "delivery_id")}
        print(f"  {_when(h['at'])}  {h['kind']:<9}  {json.dumps(detail, sort_keys=True)}",
              file=out)


def _follow_line(entry: dict, row: dict | None) -> str:
    """One tailed history row; a detection (``row``: its notification) says what and why."""
    nid = entry["notification_id"]
    if row is not None:
        n = row["notification"]
        head = (f"{n['type']} {n['hostname']} {subject(n)} {event(n)}; "
                f"{describe_event(entry)}")
        if row["decision"]:
            head += f"; decision {_compact(row['decision'], 200)}"
        return f"{_when(entry['at'], precise=True)}  #{nid}  {head}"
    return f"{_when(entry['at'], precise=True)}  #{nid}  {describe_event(entry)}"


def follow(box: Outbox, *, after_id: int, type: str | None, hostname: str | None,
           as_json: bool, out: TextIO, interval: float = 0.5,
           stop: threading.Event | None = None) -> None:
    """Tail the outbox's history until ``stop`` is set. Other processes write it, so this
    polls the file (a read of one index every ``interval``); it is a viewer, never on a
    detection path."""
    read = ReadModel(box)
    stop = stop or threading.Event()
    while not stop.is_set():
        entries = read.events(after_id=after_id, type=type, hostname=hostname)
        for entry in entries:
            after_id = entry["id"]
            row = read.get(entry["notification_id"]) if entry["kind"] == "detected" else None
            if as_json:
                doc = dict(entry)
                if row:
                    doc.update(notification=row["notification"], source=row["source"],
                               decision=row["decision"])
                print(json.dumps(doc, sort_keys=True), file=out)
            else:
                print(_follow_line(entry, row), file=out)
        out.flush()
        if not entries:
            stop.wait(interval)


def run(box: Outbox, *, since: float | None, type: str | None, hostname: str | None,
        state: str | None, limit: int, as_json: bool, brief: bool, follow_: bool,
        out: TextIO = sys.stdout) -> int:
    read = ReadModel(box)
    start_id = read.last_event_id()  # --follow prints what comes after the listing
    rows = read.list(since=since, type=type, hostname=hostname, state=state, limit=limit,
                    newest=True, with_history=as_json or not brief)
    if as_json and not follow_:
        print(json.dumps(rows, indent=2, sort_keys=True), file=out)
        return 0
    if as_json:
        for row in rows:
            print(json.dumps(row, sort_keys=True), file=out)
    else:
        render_table(rows, out, brief=brief)
    if follow_:
        out.flush()
        follow(box, after_id=start_id, type=type, hostname=hostname, as_json=as_json, out=out,
               stop=_stop_on_signals())
    return 0


def _stop_on_signals() -> threading.Event:
    """Ctrl-C or SIGTERM end --follow after the line being printed, not inside a read or
    a write (no traceback, exit status 0)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop
