"""``ha-monitors status``: is every monitor of this host running, connected and delivering?

Read from what the daemons already publish (``<state_path>/<daemon>.status.json``, written
with each sd_notify STATUS) and from the outbox; exits like a Nagios/Sensu check:
0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import TextIO

from monitors.history import ReadModel
from monitors.outbox import Outbox
from monitors import owners

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
LEVELS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
SUFFIX = ".status.json"


@dataclasses.dataclass
class Thresholds:
    stale_after: float = 30.0     # a running daemon rewrites its file every <= 5 s
    pending_warn: float = 60.0    # oldest undelivered notification
    pending_crit: float = 600.0
    window: float = 86400.0       # rejected/expired notifications this recent need an operator
    recovered_for: float = 3600.0  # a recovered outbox file is reported this long


@dataclasses.dataclass
class Problem:
    level: int
    text: str


def known_daemons(state_path: str) -> list[str]:
    try:
        names = os.listdir(state_path)
    except OSError:
        return []
    return sorted(n[: -len(SUFFIX)] for n in names if n.endswith(SUFFIX))


def _read(state_path: str, name: str) -> dict | None:
    for attempt in range(3):  # on a full disk the daemon rewrites it in place
        try:
            with open(os.path.join(state_path, name + SUFFIX)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except ValueError as exc:
            error = exc
            time.sleep(0.05)
        except OSError as exc:
            error = exc
            break
    return {"daemon": name, "state": "unreadable", "error": str(error)}


def _alive(doc: dict, state_path: str) -> bool:
    if doc.get("owner"):
        return owners.alive(doc["owner"], state_path)
    return bool(doc.get("pid")) and os.path.exists(f"/proc/{doc['pid']}")


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "never"
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ts))} ({now - ts:.0f}s ago)"


def daemon_report(state_path: str, name: str, th: Thresholds, now: float,
                  expected: bool) -> tuple[dict, list[Problem]]:
    doc = _read(state_path, name)
    if doc is None:
        report = {"daemon": name, "state": "unknown", "sources": {}}
        level = CRITICAL if expected else WARNING
        return report, [Problem(level, f"{name}: no status file in {state_path} "
                                       "(never started with this state_path?)")]
    problems = []
    state = doc.get("state")
    if state == "unreadable":
        problems.append(Problem(UNKNOWN, f"{name}: status file unreadable: {doc['error']}"))
    elif state == "stopped" and not expected and doc.get("supervised") is False:
        pass  # a one-off run by hand (e.g. `ha-monitors deliver`) that ended: nothing to do
    elif state == "stopped":
        problems.append(Problem(CRITICAL, f"{name}: stopped at {_ago(doc.get('updated_at'), now)}"))
    elif not _alive(doc, state_path):
        state = "dead"
        problems.append(Problem(CRITICAL, f"{name}: not running (pid {doc.get('pid')} is gone; "
                                          f"last update {_ago(doc.get('updated_at'), now)})"))
    elif now - (doc.get("updated_at") or 0) > th.stale_after:
        state = "stale"
        problems.append(Problem(CRITICAL, f"{name}: pid {doc.get('pid')} has not updated its "
                                          f"status since {_ago(doc.get('updated_at'), now)} "
                                          "(hung?)"))
    if state == "running":
        box = doc.get("outbox") or {}
        if box.get("error"):
            problems.append(Problem(CRITICAL, f"{name}: {box['error']}; {box.get('held', 0)} "
                                              "detection(s) held in memory, retried every "
                                              "second (free space or fix the mount)"))
        elif box.get("problem"):
            problems.append(Problem(CRITICAL, f"{name}: {box['problem']}"))
        if box.get("refused"):
            problems.append(Problem(CRITICAL, f"{name}: {box['refused']} detection(s) NOT "
                                              "kept (memory backlog full): see the journal"))
        recovered = box.get("recovered") or {}
        if recovered and now - (recovered.get("at") or 0) < th.recovered_for:
            problems.append(Problem(WARNING, f"{name}: {recovered.get('text')} (at "
                                             f"{_ago(recovered.get('at'), now)})"))
        reload = doc.get("reload") or {}
        if reload.get("ok") is False:
            problems.append(Problem(WARNING, f"{name}: reload refused at "
                                             f"{_ago(reload.get('at'), now)}: "
                                             f"{(reload.get('error') or '')[:200]}; the old "
                                             "configuration runs, the file on disk would "
                                             "not start cleanly"))
        for source, health in sorted((doc.get("sources") or {}).items()):
            if not health.get("ok"):
                problems.append(Problem(CRITICAL, f"{name}: source {source}: "
                                                  f"{health.get('detail')}"))
            elif health.get("warn"):
                problems.append(Problem(WARNING, f"{name}: source {source}: "
                                                 f"{health.get('detail')}"))
    return {**doc, "state": state}, problems


def outbox_report(box: Outbox, th: Thresholds, now: float) -> tuple[dict, list[Problem]]:
    read = ReadModel(box)
    counts = read.counts()
    oldest = read.oldest_pending_age(exclude_held=True)
    held = read.held()  # the 20 oldest: enough to name them
    report = {"counts": counts, "depth": counts.get("pending", 0),
              "oldest_pending_age": round(oldest, 3), "held": len(held)}
    problems = []
    for row in held:
        # Masakari refuses the host's notifications while it is on maintenance: nothing is
        # lost (kept, asked again), but an operator should know what waits for them.
        problems.append(Problem(WARNING, f"notification {row['id']} ({row['type']} "
                                         f"{row['hostname']}) {row['last_message'][:160]}; "
                                         f"kept pending, delivered when that ends "
                                         f"(ha-monitors outbox show {row['id']})"))
    if oldest > th.pending_crit:
        problems.append(Problem(CRITICAL, f"outbox: oldest undelivered notification waits for "
                                          f"{oldest:.0f}s (ha-monitors outbox list --state pending)"))
    elif oldest > th.pending_warn:
        problems.append(Problem(WARNING, f"outbox: oldest undelivered notification waits for "
                                         f"{oldest:.0f}s"))
    for state in ("rejected", "expired"):
        rows = read.list(state=state, since=now - th.window, limit=1000)
        acked = read.acknowledged(r["id"] for r in rows)
        for row in [r for r in rows if r["id"] not in acked][:20]:
            last = next((d for d in row["deliveries"] if d["state"] == state), {})
            problems.append(Problem(CRITICAL, f"notification {row['id']} {state} by "
                                              f"{last.get('driver', '?')}: "
                                              f"{(last.get('last_message') or '')[:120]} "
                                              f"(ha-monitors outbox show {row['id']}; then "
                                              f"outbox retry or outbox ack {row['id']})"))
    problems += recovery_problems(read, th, now)
    return report, problems


def recovery_problems(read: ReadModel, th: Thresholds, now: float) -> list[Problem]:
    """What the engine did with delivered notifications (monitors/follow.py): a recovery
    that ended failed (or still error when following gave up) is CRITICAL, one in error
    or without a final status within [delivery] follow_max_age a WARNING, until an
    operator acknowledges it (outbox ack)."""
    from monitors.follow import needs_attention

    problems = []
    for r in read.recovery_list(since=now - th.window):
        level = needs_attention(r["status"], r["ended"])
        if level is None or r["acknowledged"]:
            continue
        status = r["status"] or "unknown"
        what = (f"recovery {status.upper()}" if r["ended"] == "final"
                else f"recovery {status} (the engine retries)" if r["ended"] is None
                else f"recovery still {status} when following gave up")
        error = f"; {r['last_error'][:100]}" if r["last_error"] else ""
        problems.append(Problem(CRITICAL if level == "critical" else WARNING,
                                f"notification {r['notification_id']} ({r['type']} "
                                f"{r['hostname']}) {what} at {r['driver']} "
                                f"{r['remote_id']}{error} (ha-monitors history; then "
                                f"outbox ack {r['notification_id']})"))
    return problems[:20] if len(problems) <= 20 else problems[:20] + [Problem(
        max(p.level for p in problems), f"and {len(problems) - 20} more recoveries need "
        "attention (ha-monitors history)")]


def collect(state_path: str, box: Outbox | None, daemons: list[str] | None,
            th: Thresholds, now: float | None = None, outbox_error: str | None = None
            ) -> dict:
    now = time.time() if now is None else now
    names = daemons or known_daemons(state_path)
    problems: list[Problem] = []
    reports = []
    for name in names:
        report, found = daemon_report(state_path, name, th, now, expected=bool(daemons))
        reports.append(report)
        problems += found
    if not names:
        problems.append(Problem(UNKNOWN, f"no daemon has written a status file in {state_path}"))
    outbox = None
    if outbox_error:  # e.g. read-only or full: the daemons hold detections in memory
        problems.insert(0, Problem(CRITICAL, outbox_error))
    if box is not None:
        try:
            outbox, found = outbox_report(box, th, now)
            problems += found
        except Exception as exc:  # noqa: BLE001 - e.g. locked or corrupt database
            problems.append(Problem(UNKNOWN, f"outbox unreadable: {exc}"))
    level = max((p.level for p in problems), default=OK)
    return {"level": LEVELS[level], "exit_code": level, "daemons": reports, "outbox": outbox,
            "problems": [dataclasses.asdict(p) | {"level": LEVELS[p.level]} for p in problems]}


def render(result: dict, out: TextIO) -> None:
    now = time.time()
    problems = result["problems"]
    running = sum(1 for d in result["daemons"] if d.get("state") == "running")
    box = result["outbox"] or {}
    head = (f"{running} of {len(result['daemons'])} daemon(s) running; outbox "
            f"{box.get('depth', '?')} pending")
    if problems:
        head = "; ".join(p["text"] for p in problems[:3]) + (
            f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    print(f"{result['level']}: {head}", file=out)
    rows = [("DAEMON", "STATE", "PID", "UPDATED", "LAST EVENT", "SOURCES")]
    for d in result["daemons"]:
        sources = ", ".join(f"{n}: {h.get('detail')}" for n, h in
                            sorted((d.get("sources") or {}).items())) or "-"
        rows.append((d["daemon"], d.get("state", "?"), str(d.get("pid", "-")),
                     _ago(d.get("updated_at"), now), _ago(d.get("last_event"), now), sources))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths + [0])).rstrip(), file=out)
    if box:
        counts = box["counts"]
        held = f", {box['held']} held by the recipient" if box.get("held") else ""
        print(f"outbox: {counts.get('pending', 0)} pending{held} (oldest "
              f"{box['oldest_pending_age']:.0f}s), {counts.get('delivered', 0)} delivered, "
              f"{counts.get('rejected', 0)} rejected, {counts.get('expired', 0)} expired, "
              f"{counts.get('superseded', 0)} superseded",
              file=out)
    if problems:
        print("attention:", file=out)
        for p in problems:
            print(f"  {p['level']}: {p['text']}", file=out)
