"""The compute column of the matrix: are nova-compute and libvirtd usable on this host?

ha-processmonitor owns that question: it watches those processes, restarts them, and says
it gave up with a PROCESS STOPPED (and that they run again with PROCESS STARTED). A restart
it is handling (seconds to minutes) is not a host failure, so this module does not judge
from a process table scan of its own. It reads processmonitor's verdicts from the shared
outbox — durable, already written by processmonitor, no second file format, and it works
across restarts of either daemon. hostmonitor never imports processmonitor.

The safety net for a host without processmonitor (or with a hung one): a compute process
that was seen running since this daemon started and has been gone longer than
``[hostmonitor] compute_restart_window`` counts as down. One that was never seen running
since start (boot order, package upgrade, hostmonitor started first) never counts: only
processmonitor can say that it failed.
"""
from __future__ import annotations

import logging
import os
import time

from hostmonitor.links import DOWN, UP

LOG = logging.getLogger(__name__)


def running(names: list[str]) -> set[str]:
    """Which of ``names`` run now (process name or basename of argv[0..2]; zombies are
    dead)."""
    import psutil

    wanted, found = set(names), set()
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        info = proc.info
        if info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        candidates = {info.get("name") or ""}
        candidates |= {os.path.basename(a) for a in (info.get("cmdline") or [])[:3]}
        found |= wanted & candidates
    return found


def _matches(process_name: str, names: list[str]) -> str | None:
    base = os.path.basename(process_name.split()[0]) if process_name.strip() else ""
    for name in names:
        if process_name == name or base == name:
            return name
    return None


def processmonitor_gave_up(outbox, hostname: str, names: list[str]) -> dict[str, int]:
    """Compute processes whose latest PROCESS notification in the outbox is STOPPED
    (processmonitor's "every restart failed"), with that notification's id."""
    if outbox is None or not names:
        return {}
    from monitors.history import ReadModel

    latest: dict[str, dict] = {}
    for row in ReadModel(outbox).list(type="PROCESS", hostname=hostname, newest=True, limit=200):
        name = _matches(row["notification"]["payload"].get("process_name", ""), names)
        if name:
            latest[name] = row  # rows come in id order: the last one wins
    return {name: row["id"] for name, row in latest.items()
            if row["notification"]["payload"].get("event") == "STOPPED"}


class ComputeColumn:
    def __init__(self):
        self.seen_running: set[str] = set()
        self.gone_since: dict[str, float] = {}

    def state(self, names: list[str], window: float, outbox, hostname: str
              ) -> tuple[str, dict]:
        """(up | down, evidence for the decision)."""
        if not names:
            return UP, {}
        evidence: dict = {}
        try:
            gave_up = processmonitor_gave_up(outbox, hostname, names)
        except Exception as exc:  # noqa: BLE001 - an unreadable outbox is not a verdict
            LOG.warning("cannot read processmonitor's verdicts from the outbox: %s", exc)
            gave_up = {}
        if gave_up:
            evidence["processmonitor_gave_up"] = {n: f"notification {i}"
                                                  for n, i in sorted(gave_up.items())}
        now = time.monotonic()
        up = running(names)
        self.seen_running |= up
        for name in up:
            self.gone_since.pop(name, None)
        overdue, restarting, never = [], {}, []
        for name in sorted(set(names) - up):
            if name not in self.seen_running:
                never.append(name)
                continue
            since = self.gone_since.setdefault(name, now)
            if now - since >= window:
                overdue.append(name)
            else:
                restarting[name] = round(now - since, 1)
        if never:
            evidence["never_seen_running_since_start"] = never
        if restarting:
            evidence["gone_within_restart_window_s"] = restarting
        if overdue:
            evidence["gone_longer_than_restart_window"] = overdue
        return (DOWN if gave_up or overdue else UP), evidence
