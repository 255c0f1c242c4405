"""The kernel findings hostmonitor holds, behind one lock, and their state file.

Why a store of its own: the kmsg thread adds a condition and counts its repeats, and it
expires conditions when the log is idle; the evaluation thread (``storage()``,
``health()``) and the status thread expire and read them at the same time. A plain dict
shared by those threads raises "dictionary changed size during iteration" and loses
deletions. Every read and change goes through ``Conditions`` and its one lock.

The file is ``<state_path>/hostmonitor-kernel.json`` (``{"boot_id", "conditions": [...]}``,
one object per ``Condition`` field, ``until`` in wall-clock seconds). It is written under
the same lock as the change it records: each file is one moment's conditions, the files
are written in the order of the changes (the last one is the current state, so a restart
forgets nothing), and two threads never share statefile's per-process temporary file.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time

from monitors import statefile

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class Condition:
    input: str            # storage | health
    state: str            # degraded | down
    finding: str
    subject: str
    rule: str             # rule origin, file:line
    line: str             # the kernel line (dmesg form)
    seq: int
    since: float          # wall clock
    until: float | None   # monotonic expiry; None = held by a live check or until reboot
    count: int = 1
    pid: int | None = None  # hung_task: the blocked task

    @property
    def key(self) -> tuple[str, str]:
        return self.finding, self.subject

    def evidence(self) -> dict:
        return {"finding": self.finding, "subject": self.subject, "state": self.state,
                "rule": self.rule, "kernel_line": self.line, "seq": self.seq,
                "records": self.count}


class Conditions:
    """The held conditions by (finding, subject). ``values()`` is a list taken under the
    lock; the Condition objects in it are the store's and are changed only through it."""

    def __init__(self, path: str, boot: str):
        self.path, self.boot = path, boot
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], Condition] = {}

    def __len__(self) -> int:
        return len(self._held)

    def values(self) -> list[Condition]:
        with self._lock:
            return list(self._held.values())

    def get(self, key: tuple[str, str]) -> Condition | None:
        with self._lock:
            return self._held.get(key)

    def count_repeat(self, key: tuple[str, str]) -> bool:
        """Count one more record into the condition ``key``; False when none is held.
        Not saved at once (a storm would write the file per line): the next change does."""
        with self._lock:
            cond = self._held.get(key)
            if cond is not None:
                cond.count += 1
            return cond is not None

    def hold(self, cond: Condition) -> None:
        """Hold (or replace) a condition and save."""
        with self._lock:
            self._held[cond.key] = cond
            self._save()

    def drop(self, over: list[tuple[Condition, str]]) -> list[tuple[Condition, str]]:
        """Remove the conditions judged over (with why) and save once; a condition another
        thread already removed, or replaced by a new one since it was judged, is left alone.
        Returns what was removed."""
        with self._lock:
            gone = [(c, why) for c, why in over if self._held.get(c.key) is c]
            for cond, _ in gone:
                del self._held[cond.key]
            if gone:
                self._save()
        return gone

    def load(self) -> None:
        """Read the conditions held before a restart of the daemon (not before a reboot:
        the boot id differs, and what the kernel said then is gone)."""
        try:
            doc = statefile.read(self.path)
            if doc is None or doc.get("boot_id") != self.boot:
                return  # none yet, or a reboot cleared what the kernel said
            wall = time.time() - time.monotonic()
            for item in doc.get("conditions", []):
                if item.get("until") is not None:
                    item["until"] -= wall
                cond = Condition(**item)
                with self._lock:
                    self._held[cond.key] = cond
        except statefile.StateFileError as exc:
            LOG.warning("%s; no kernel finding held from before the restart", exc)
            return
        except (ValueError, TypeError, AttributeError) as exc:
            LOG.warning("cannot read %s: %s", self.path, exc)
            return
        held = self.values()
        if held:
            LOG.info("kernel: %d finding(s) still held from before the restart: %s",
                     len(held), ", ".join(f"{c.finding}:{c.subject}" for c in held))

    def _save(self) -> None:
        """Write the conditions as they are now; the caller holds the lock."""
        wall = time.time() - time.monotonic()  # monotonic -> wall clock, for the file
        doc = {"boot_id": self.boot, "conditions": [
            {**dataclasses.asdict(c), "until": None if c.until is None else c.until + wall}
            for c in self._held.values()]}
        try:
            statefile.write(self.path, doc)
        except OSError as exc:
            LOG.warning("cannot write %s: %s", self.path, exc)
