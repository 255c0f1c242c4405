"""The compute column of the matrix: are nova-compute and libvirtd usable on this host?

ha-processmonitor owns that question: it watches those processes, restarts them, and says
it gave up with a PROCESS STOPPED (and that they run again with PROCESS STARTED). A restart
it is handling (seconds to minutes) is not a host failure, so this module does not judge
from a process table scan of its own. It reads processmonitor's verdicts from its verdict
file (monitors/process_verdicts.py, in the shared ``state_path``): ``gave_up`` is written
once the PROCESS STOPPED is durable, with its notification id, so the file never claims
more than the outbox holds; it survives restarts of either daemon. hostmonitor never
imports processmonitor, and no source reads the outbox.

The safety net for a host without processmonitor (or with a hung one): a compute process
that was seen running since this daemon started and has been gone longer than
``[hostmonitor] compute_restart_window`` counts as down. One that was never seen running
since start (boot order, package upgrade, hostmonitor started first) never counts: only
processmonitor can say that it failed. And a ``gave_up`` never counts while the process
runs: the file then outlived what it said (processmonitor stopped before it saw the process
again, or the process was removed from its list).
"""
from __future__ import annotations

import logging
import os
import time

from monitors import process_verdicts

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


def processmonitor_gave_up(state_path: str, names: list[str]) -> dict[str, int | None]:
    """Compute processes whose latest verdict from processmonitor is ``gave_up`` (every
    restart failed: PROCESS STOPPED queued), with that notification's id. Raises
    StateFileError (naming the file) when the verdict file is unreadable."""
    if not names:
        return {}
    latest: dict[str, dict] = {}
    for process, verdict in process_verdicts.read(state_path).items():
        name = _matches(process, names)
        if name and (name not in latest
                     or (verdict.get("at") or 0) >= (latest[name].get("at") or 0)):
            latest[name] = verdict
    return {name: v.get("notification") for name, v in latest.items()
            if v["verdict"] == process_verdicts.GAVE_UP}


class ComputeColumn:
    def __init__(self):
        self.seen_running: set[str] = set()
        self.gone_since: dict[str, float] = {}

    def state(self, names: list[str], window: float, state_path: str) -> tuple[str, dict]:
        """(up | down, evidence for the decision)."""
        if not names:
            return UP, {}
        evidence: dict = {}
        try:
            gave_up = processmonitor_gave_up(state_path, names)
        except Exception as exc:  # noqa: BLE001 - an unreadable file is not a verdict
            LOG.warning("cannot read processmonitor's verdicts: %s", exc)
            gave_up = {}
        now = time.monotonic()
        up = running(names)
        # A gave_up beside a running process is stale: processmonitor writes ``running`` as
        # soon as it sees the process again, so the file outlived its writer (processmonitor
        # stopped, or the process left its list). It never makes this host unfit.
        stale = sorted(set(gave_up) & up)
        if stale:
            evidence["processmonitor_gave_up_but_running"] = stale
            gave_up = {n: i for n, i in gave_up.items() if n not in up}
        if gave_up:
            evidence["processmonitor_gave_up"] = {n: f"notification {i}"
                                                  for n, i in sorted(gave_up.items())}
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
