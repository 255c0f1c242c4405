"""Which watched pids are alive but do no work: stopped, traced or stuck in "D" too long.

A pidfd says when a process exits, never when it stops working. A process that was
SIGSTOPped, is held by a tracer or sleeps uninterruptibly on hung storage still has its
pid, so processmonitor would call it running forever. The kernel pushes nothing for this
either: the proc connector reports fork/exec/exit/ptrace attach but no stop or continue
(linux/cn_proc.h), a pidfd only exit, and waitid(WSTOPPED) only works for one's own
children. So this is the one poll: every ``freeze_check_interval`` seconds the watcher
hands the pids it watches to ``FreezeTracker.sample``, which reads two small /proc files
per pid (monitors/procfs.liveness, safe on a process stuck in "D").

A pid counts as frozen when every sample for ``freeze_timeout`` seconds showed it in
T, t or D **and** its CPU time and context switch counts never moved: a busy process that
merely passes through "D" (a disk read) or a short stop-and-continue changes them, and the
count restarts. A frozen pid thaws when a sample shows it running again (SIGCONT, the
storage came back). A liveness command that keeps failing marks pids frozen too
(``mark``); those stay frozen until they exit, whatever their state says, and so does a
pid processmonitor has SIGKILLed (``killed``): one that wakes from "D" only to die must
not look like a process that came back.
"""
from __future__ import annotations

import dataclasses

from monitors import procfs

STATE, LIVENESS, KILLED = "state", "liveness", "killed"  # only STATE thaws
STATE_NAMES = {"T": "stopped", "t": "stopped by a tracer", "D": "in uninterruptible sleep"}


@dataclasses.dataclass
class Frozen:
    kind: str     # STATE, LIVENESS or KILLED
    detail: str   # for the log and the decision, e.g. "stopped (T) for 2.1s"


class FreezeTracker:
    """Per-pid "no progress since" bookkeeping; not thread-safe: the watcher calls
    everything but ``read`` under its lock."""

    def __init__(self):
        self._still: dict[int, tuple[float, tuple[str, int, int]]] = {}  # since, sample
        self.frozen: dict[int, Frozen] = {}

    def forget(self, pid: int) -> None:
        self._still.pop(pid, None)
        self.frozen.pop(pid, None)

    def mark(self, pid: int, detail: str) -> bool:
        """A liveness command declared ``pid`` frozen; True if it was not already."""
        new = pid not in self.frozen
        self.frozen[pid] = Frozen(LIVENESS, detail)
        return new

    @staticmethod
    def read(bounds: dict[int, float], read=procfs.liveness) -> dict:
        """The /proc samples of the pids to check (``bounds``: pid → freeze_timeout, 0 =
        not checked). Takes no lock: the watcher reads first, then ``update``s under its
        lock."""
        return {pid: read(pid) if bound > 0 else None for pid, bound in bounds.items()}

    def killed(self, pid: int) -> None:
        """``pid`` was sent SIGKILL: it stays frozen until it exits (it never thaws)."""
        held = self.frozen.get(pid)
        if held is not None:
            held.kind = KILLED

    def sample(self, bounds: dict[int, float], now: float,
               read=procfs.liveness) -> tuple[list[int], list[int]]:
        """``read`` then ``update`` (for a caller that needs no lock in between)."""
        return self.update(bounds, self.read(bounds, read), now)

    def update(self, bounds: dict[int, float], samples: dict,
               now: float) -> tuple[list[int], list[int]]:
        """Take one look at every pid into account. Returns (pids that just became
        frozen, pids that just thawed)."""
        frozen, thawed = [], []
        for pid in [p for p in self._still if p not in bounds]:
            del self._still[pid]
        for pid, bound in bounds.items():
            sample = samples.get(pid)
            if sample is None or sample[0] not in procfs.FROZEN_STATES:
                self._still.pop(pid, None)
                held = self.frozen.get(pid)
                if held is not None and held.kind == STATE and sample is not None:
                    del self.frozen[pid]
                    thawed.append(pid)
                continue
            since, last = self._still.get(pid, (now, None))
            if last is not None and last[1:] != sample[1:]:
                since = now  # it did some work since the last look: count again
                if pid in self.frozen and self.frozen[pid].kind == STATE:
                    del self.frozen[pid]
                    thawed.append(pid)
            self._still[pid] = (since, sample)
            if now - since >= bound and pid not in self.frozen:
                state = sample[0]
                self.frozen[pid] = Frozen(STATE, f"{STATE_NAMES[state]} ({state}) with no "
                                                 f"CPU time or context switch for "
                                                 f"{now - since:.1f}s")
                frozen.append(pid)
        return frozen, thawed
