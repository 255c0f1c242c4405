"""What the instancemonitor remembers across restarts: the last known state of every domain,
and the reports it was making when it stopped.

``instancemonitor-domains.json`` (monitors/statefile.py, written by a flusher when the
table changed) holds uuid -> {"name", "state", "at", "seq"}. A state moves only once the
detection that moved it is in the outbox (domain_events.py), so after any restart the
reconcile (reconcile.py) reports what the file does not yet know.

That leaves one window: the detection is in the outbox but the daemon dies (SIGKILL) before
the flusher saved the new state, so the restart sees the failure again. The daemon keeps
its own record of what it reported instead of reading the outbox back: before handing a
LIFECYCLE detection to the outbox it appends an *intent* line to
``instancemonitor-reporting.jsonl`` (domain, vir_domain_event, the detection's
generated_time, the ``seq`` of the domain record it started from), and once the outbox has
stored it (the emitter's ``on_stored``) a *stored* line. At the restart the reconcile
(reconcile.py) finds the missed event's intent and:

- stored: the detection is in the outbox and will be delivered; only the state moves;
- not stored (the put never committed, or the daemon died in the microseconds between the
  commit and the line): sends it again *as the same notification* (the intent's
  generated_time). If the outbox has it pending, its put answers "not queued twice"; were
  it already delivered, masakari-api answers 409 duplicate (same payload and
  generated_time, no time limit), which the driver records as delivered and the engine
  never sees.

An intent counts only while the saved record's ``seq`` is not newer than the intent's:
any state saved after the intent's detection supersedes it, so an old intent never masks
a new failure. The journal is emptied whenever a save leaves no intent open.

The journal is written without fsync: a SIGKILL keeps what was written (page cache). A
power loss may lose its last lines; a failure reported again after one carries a new
generated_time (masakari-api's 180 s duplicate window then applies).
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time

from monitors import statefile

LOG = logging.getLogger(__name__)

STATE_FILE = "instancemonitor-domains.json"
JOURNAL = "instancemonitor-reporting.jsonl"


class DomainStates:
    """uuid -> {"name", "state", "at", "seq"} in memory, flushed to JSON atomically, plus
    the intents of reports in flight."""

    def __init__(self, state_path: str):
        self.path = os.path.join(state_path, STATE_FILE)
        self.journal_path = os.path.join(state_path, JOURNAL)
        self.lock = threading.Lock()
        self._save_lock = threading.Lock()
        self.domains: dict[str, dict] = {}
        self.saved_at = 0.0
        self._seq = 0
        self._dirty = threading.Event()
        self._tokens = itertools.count(1)
        self._open: dict[int, dict] = {}     # intents of this run not yet resolved
        self._loaded: list[dict] = []        # intents found in the journal at load
        self._journal_fd: int | None = None
        self._journal_on_disk = False  # a journal of an earlier run, not opened by this one
        self._journal_warned = 0.0

    # -- load / save ------------------------------------------------------------------------
    def load(self) -> None:
        try:
            doc = statefile.read(self.path) or {}
            domains = doc.get("domains", {})
            if not isinstance(domains, dict):
                raise ValueError("'domains' is not an object")
            self.domains = {str(k): dict(v) for k, v in domains.items() if isinstance(v, dict)}
            self.saved_at = float(doc.get("saved_at", 0.0))
            self._seq = max([int(doc.get("seq", 0))] + [int(r.get("seq", 0))
                                                         for r in self.domains.values()])
        except (ValueError, TypeError) as exc:
            LOG.error("%s is unreadable (%s): starting without last known domain states; "
                      "domains that failed while the daemon was down will not be reported",
                      self.path, exc)
            self.domains = {}
        self._loaded = self._read_journal()
        self._journal_on_disk = os.path.exists(self.journal_path)

    def _read_journal(self) -> list[dict]:
        out = []
        try:
            with open(self.journal_path, "rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return out
        except OSError as exc:
            LOG.error("%s is unreadable (%s): a report interrupted by the last stop may be "
                      "sent again with a new generated_time", self.journal_path, exc)
            return out
        by_key: dict[tuple, dict] = {}
        for number, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
                key = (str(rec["uuid"]), str(rec["event"]), float(rec["t"]))
                if rec.get("op") == "stored":
                    if key in by_key:
                        by_key[key]["stored"] = True
                    continue
                by_key[key] = {"uuid": key[0], "event": key[1], "t": key[2],
                               "since": int(rec["since"]), "stored": False}
            except (ValueError, KeyError, TypeError, AttributeError):
                # a torn last line: the daemon died writing it
                LOG.warning("%s:%d: not a journal record, ignored", self.journal_path, number)
        out.extend(by_key.values())
        return out

    def save(self) -> None:
        with self._save_lock:  # the flusher, the reconcile and stop() share one temp file
            with self.lock:
                doc = {"saved_at": time.time(), "seq": self._seq,
                       "domains": dict(self.domains)}
            try:
                statefile.write(self.path, doc, sort_keys=True)
            except OSError as exc:
                self._dirty.set()
                LOG.error("cannot write %s: %s", self.path, exc)
                return
        self.saved_at = doc["saved_at"]
        with self.lock:
            if self._open or self._loaded:  # still needed after a restart
                return
            try:
                if self._journal_fd is not None:
                    os.ftruncate(self._journal_fd, 0)
                elif self._journal_on_disk:
                    os.truncate(self.journal_path, 0)
                self._journal_on_disk = False
            except OSError as exc:
                LOG.debug("cannot empty %s: %s", self.journal_path, exc)

    def flush_if_dirty(self) -> None:
        if self._dirty.is_set():
            self._dirty.clear()
            self.save()

    def wait_dirty(self, timeout: float) -> bool:
        return self._dirty.wait(timeout)

    def close(self) -> None:
        with self.lock:
            fd, self._journal_fd = self._journal_fd, None
        if fd is not None:
            os.close(fd)

    # -- the table --------------------------------------------------------------------------
    def set(self, uuid: str, name: str, state: str, **extra) -> dict | None:
        """Record a state; returns the previous record."""
        with self.lock:
            prev = self.domains.get(uuid)
            self._seq += 1
            self.domains[uuid] = {"name": name, "state": state, "at": time.time(),
                                  "seq": self._seq, **extra}
        self._dirty.set()
        return prev

    def get(self, uuid: str) -> dict | None:
        with self.lock:
            rec = self.domains.get(uuid)
            return dict(rec) if rec else None

    def forget(self, uuid: str) -> None:
        with self.lock:
            self.domains.pop(uuid, None)
            self._seq += 1
        self._dirty.set()

    def snapshot(self) -> dict[str, dict]:
        with self.lock:
            return {k: dict(v) for k, v in self.domains.items()}

    # -- intents ----------------------------------------------------------------------------
    def intend(self, uuid: str, event: str, generated_time: float) -> int:
        """Note (in the journal, before the outbox put) that ``event`` of ``uuid`` is being
        reported with ``generated_time``; returns a token for resolve()."""
        with self.lock:
            rec = self.domains.get(uuid)
            intent = {"uuid": uuid, "event": event, "t": generated_time,
                      "since": int(rec.get("seq", 0)) if rec else 0, "stored": False}
            token = next(self._tokens)
            self._open[token] = intent
            self._append({"op": "intent", **intent})
        return token

    def stored(self, token: int) -> None:
        """The intent's detection is in the outbox (its on_stored ran)."""
        with self.lock:
            intent = self._open.get(token)
            if intent is not None and not intent["stored"]:
                intent["stored"] = True
                self._append({"op": "stored", "uuid": intent["uuid"],
                              "event": intent["event"], "t": intent["t"]})

    def _append(self, record: dict) -> None:
        """One journal line (with the lock held); never raises."""
        record.pop("stored", None)
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        try:
            if self._journal_fd is None:
                self._journal_fd = os.open(self.journal_path,
                                           os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(self._journal_fd, line)
        except OSError as exc:  # e.g. disk full: the report goes on without it
            now = time.monotonic()
            if now - self._journal_warned >= 60.0:
                self._journal_warned = now
                LOG.warning("cannot write %s (%s): a restart before the domain states are "
                            "saved may report a failure again", self.journal_path, exc)

    def resolve(self, token: int) -> None:
        """The intent's detection is stored and its state change applied (or it was never
        handed over): it no longer needs to survive a restart."""
        with self.lock:
            self._open.pop(token, None)

    def intent_for(self, uuid: str, event: str, known: dict | None) -> dict | None:
        """The latest live intent of reporting ``event`` of ``uuid`` given the last known
        record ``known`` (None when the record has moved on since)."""
        since = int(known.get("seq", 0)) if known else 0
        with self.lock:
            candidates = [i for i in (*self._loaded, *self._open.values())
                          if i["uuid"] == uuid and i["event"] == event and i["since"] >= since]
        return dict(max(candidates, key=lambda i: i["t"])) if candidates else None

    def drop_loaded(self) -> None:
        """After the first reconcile the listing is the truth: the journal's intents have
        been used (or are superseded)."""
        with self.lock:
            self._loaded = []
