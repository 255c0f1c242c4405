"""processmonitor's verdicts on the processes it watches, for hostmonitor's compute column.

processmonitor owns "are the compute services running?" (design: who may say what). It keeps
its latest verdict per process in one small state file; hostmonitor reads it instead of the
outbox (sources never read the outbox) and never imports processmonitor. A verdict is
written after the notification that carries it is durable, so the file never claims more
than the outbox holds.

    {"owner": "<owner id, monitors.owners>", "updated_at": ...,
     "processes": {"nova-compute": {"verdict": "gave_up", "notification": 12, "at": ...}}}

Verdicts: ``running``; ``restarting`` (down, processmonitor is handling it); ``gave_up``
(every restart failed: PROCESS STOPPED was queued, with its notification id).
"""
from __future__ import annotations

import os
import threading
import time

from monitors import owners, statefile

FILE = "processmonitor.verdicts.json"
RUNNING, RESTARTING, GAVE_UP = "running", "restarting", "gave_up"
VERDICTS = (RUNNING, RESTARTING, GAVE_UP)

_lock = threading.Lock()


def path(state_path: str) -> str:
    return os.path.join(state_path, FILE)


def write(state_path: str, name: str, verdict: str, notification: int | None = None) -> None:
    """Record one process's verdict (read-modify-write under a lock; raises OSError)."""
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}")
    with _lock:
        try:
            doc = statefile.read(path(state_path)) or {}
        except statefile.StateFileError:
            doc = {}
        processes = doc.get("processes") if isinstance(doc.get("processes"), dict) else {}
        processes[name] = {"verdict": verdict, "notification": notification, "at": time.time()}
        statefile.write(path(state_path), {"owner": owners.identity(state_path),
                                           "updated_at": time.time(), "processes": processes})


def read(state_path: str) -> dict[str, dict]:
    """{process name: {"verdict", "notification", "at"}}; {} when processmonitor never
    wrote one. Raises StateFileError (naming the file) when it is unreadable."""
    doc = statefile.read(path(state_path)) or {}
    processes = doc.get("processes", {})
    if not isinstance(processes, dict):
        raise statefile.StateFileError(f"{path(state_path)}: 'processes' is not an object")
    return {str(k): v for k, v in processes.items()
            if isinstance(v, dict) and v.get("verdict") in VERDICTS}
