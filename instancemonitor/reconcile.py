"""Last known state of every domain, and what a reconnect must report that events missed.

The libvirt callback updates the in-memory table (a dict write under a lock, no I/O); a
flusher writes it atomically to ``<state_path>/instancemonitor-domains.json`` when it
changed. On every (re)connect, and at daemon start, the listing of all domains is compared
with that table: a domain that was active and is now shut off by a crash or failure, paused
by an I/O error or watchdog, or gone, yields the notification its missed event would have
produced. The table then records the new state, so nothing is reported twice.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time

LOG = logging.getLogger(__name__)

STATE_FILE = "instancemonitor-domains.json"

# virDomainState
NOSTATE, RUNNING, BLOCKED, PAUSED, SHUTDOWN, SHUTOFF, CRASHED, PMSUSPENDED = range(8)
STATE_NAMES = {NOSTATE: "nostate", RUNNING: "running", BLOCKED: "blocked", PAUSED: "paused",
               SHUTDOWN: "shutdown", SHUTOFF: "shutoff", CRASHED: "crashed",
               PMSUSPENDED: "pmsuspended"}
ACTIVE = {"running", "blocked", "paused", "shutdown", "nostate", "pmsuspended"}

# virDomainShutoffReason -> the STOPPED detail it implies (None: an intended operation)
SHUTOFF_REASON = {0: "STOPPED_FAILED", 1: "STOPPED_SHUTDOWN", 2: "STOPPED_DESTROYED",
                  3: "STOPPED_CRASHED", 4: None, 5: None, 6: "STOPPED_FAILED", 7: None,
                  8: "STOPPED_FAILED"}
PAUSED_REASON = {5: "SUSPENDED_IOERROR", 6: "SUSPENDED_WATCHDOG"}
VANISHED = "STOPPED_FAILED"

# LIFECYCLE event (virDomainEventType) -> state name it leaves the domain in
LIFECYCLE_STATE = {2: "running", 3: "paused", 4: "running", 5: "shutoff", 6: "shutdown",
                   7: "pmsuspended", 8: "crashed"}


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
        if rec.get("state") not in ACTIVE:
            continue
        if uuid not in listing:
            out.append(Missed(uuid, rec.get("name", ""), VANISHED, rec["state"], "vanished"))
            continue
        name, state, reason = listing[uuid]
        now = STATE_NAMES.get(state, f"state{state}")
        event = None
        if state == SHUTOFF:
            event = SHUTOFF_REASON.get(reason, "STOPPED_FAILED")
        elif state == CRASHED:
            event = "CRASHED_PANICKED" if reason == 1 else "STOPPED_CRASHED"
        elif state == PAUSED and rec.get("state") != "paused":
            event = PAUSED_REASON.get(reason)
        if event:
            out.append(Missed(uuid, name, event, rec["state"], now))
    return out


class DomainStates:
    """uuid -> {"name", "state", "at"}: in memory, flushed to JSON atomically."""

    def __init__(self, state_path: str):
        self.path = os.path.join(state_path, STATE_FILE)
        self.lock = threading.Lock()
        self.domains: dict[str, dict] = {}
        self.saved_at = 0.0
        self._dirty = threading.Event()

    def load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
            domains = doc.get("domains", {})
            if not isinstance(domains, dict):
                raise ValueError("'domains' is not an object")
            self.domains = {str(k): dict(v) for k, v in domains.items() if isinstance(v, dict)}
            self.saved_at = float(doc.get("saved_at", 0.0))
        except FileNotFoundError:
            self.domains = {}
        except (OSError, ValueError, TypeError) as exc:
            LOG.error("%s is unreadable (%s): starting without last known domain states; "
                      "domains that failed while the daemon was down will not be reported",
                      self.path, exc)
            self.domains = {}

    def set(self, uuid: str, name: str, state: str, **extra) -> dict | None:
        """Record a state; returns the previous record."""
        with self.lock:
            prev = self.domains.get(uuid)
            self.domains[uuid] = {"name": name, "state": state, "at": time.time(), **extra}
        self._dirty.set()
        return prev

    def get(self, uuid: str) -> dict | None:
        with self.lock:
            rec = self.domains.get(uuid)
            return dict(rec) if rec else None

    def forget(self, uuid: str) -> None:
        with self.lock:
            self.domains.pop(uuid, None)
        self._dirty.set()

    def snapshot(self) -> dict[str, dict]:
        with self.lock:
            return {k: dict(v) for k, v in self.domains.items()}

    def flush_if_dirty(self) -> None:
        if self._dirty.is_set():
            self._dirty.clear()
            self.save()

    def wait_dirty(self, timeout: float) -> bool:
        return self._dirty.wait(timeout)

    def save(self) -> None:
        with self.lock:
            doc = {"saved_at": time.time(), "domains": dict(self.domains)}
            text = json.dumps(doc, sort_keys=True)
        tmp = self.path + ".tmp"
        try:
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self.saved_at = doc["saved_at"]
        except OSError as exc:
            self._dirty.set()
            LOG.error("cannot write %s: %s", self.path, exc)
