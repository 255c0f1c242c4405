"""What the etcd reporter sends, decided from what it observed: no I/O, no clock, no etcd.

The source (hostmonitor.peers.etcd_source) reads etcd and hands a ``View`` to ``decide()``;
the ``Decision`` says which notifications to send and which keys to write. Keeping the
rules here, apart from the lease/election/watch plumbing, lets the unit tests hold each
safety rule down without an etcd cluster (tests/hostmonitor/peers/test_etcd_decision.py):

- an isolated host (own lease not refreshed, management interface down) reports nobody;
- only the holder of the election key (the leader) reports, so one report per failure;
- host_status NORMAL means "fenced, evacuate it" to Masakari: it is sent only once the
  peer's keys have been gone longer than ``etcd_self_fence_deadline`` (by then it has
  fenced itself), or with ``disable_ipmi_check``; with no deadline it is UNKNOWN;
- more than ``mass_failure_fraction`` of hosts down at once is an operator alert, never an
  evacuation;
- a host already reported (its ``down`` record) is not reported again until it is back
  (then STARTED), nor while the outbox has not yet taken its report (``pending``).
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Policy:
    """The options the decision depends on ([hostmonitor_peers] and [host])."""
    mass_failure_fraction: float = 0.5
    settle_time: float = 1.0
    self_fence_deadline: float = 0.0   # 0: the peers do not self-fence
    disable_ipmi_check: bool = False

    @classmethod
    def from_conf(cls, conf) -> "Policy":
        p = conf.hostmonitor_peers
        return cls(p.mass_failure_fraction, p.settle_time, p.etcd_self_fence_deadline,
                   conf.host.disable_ipmi_check)

    @property
    def deadline(self) -> float:
        """Seconds a down host's keys must have been gone before NORMAL (0: no wait)."""
        return 0.0 if self.disable_ipmi_check else self.self_fence_deadline


@dataclasses.dataclass
class View:
    """What the reporter observed in one look (linearizable reads)."""
    me: str
    isolated: str | None = None        # why this host must report nobody, or None
    leader: bool = False               # it holds the election key (checked in this look)
    hosts: frozenset = frozenset()     # registered (P/hosts/)
    alive: frozenset = frozenset()     # with a live key (P/alive/)
    recorded: frozenset = frozenset()  # reported down already (P/down/)
    pending: frozenset = frozenset()   # reports the outbox has not taken yet


@dataclasses.dataclass
class Memory:
    """What the reporter carries from one look to the next."""
    first_seen: dict = dataclasses.field(default_factory=dict)  # host -> when seen down
    mass_failure: bool = False


@dataclasses.dataclass
class Stopped:
    host: str
    fenced: bool     # host_status NORMAL (evacuate) when True, UNKNOWN otherwise
    evidence: str    # why, as the outbox's decision record says it


@dataclasses.dataclass
class Decision:
    memory: Memory
    quiet: str | None = None            # why nothing at all is decided (nobody reported)
    down: frozenset = frozenset()       # registered hosts without a live key (not me)
    mass_failure_began: bool = False    # set the mass-failure key, alert the operator
    mass_failure_ended: bool = False    # delete the mass-failure key
    stopped: list = dataclasses.field(default_factory=list)   # [Stopped]
    started: list = dataclasses.field(default_factory=list)   # hosts back: STARTED
    forget: list = dataclasses.field(default_factory=list)    # down records to delete
    waiting: list = dataclasses.field(default_factory=list)   # down, not judged yet
    due: float | None = None            # seconds until the first waiting host is judged


def decide(view: View, policy: Policy, before: Memory, now: float) -> Decision:
    """The notifications one look leads to; ``now`` is a monotonic time."""
    if view.isolated:
        return Decision(before, quiet=f"isolated: {view.isolated}")
    if not view.leader:
        return Decision(before, quiet="not the reporter")
    down = frozenset(view.hosts - view.alive - {view.me})
    memory = Memory({h: before.first_seen.get(h, now) for h in down}, before.mass_failure)
    decision = Decision(memory, down=down)
    if view.hosts and len(down) > policy.mass_failure_fraction * len(view.hosts):
        decision.mass_failure_began = not before.mass_failure
        memory.mass_failure = True
        return decision
    if before.mass_failure:
        memory.mass_failure = False
        decision.mass_failure_ended = True
    # A host is judged once it settled and, with self-fencing, once its self-fence deadline
    # passed (counted from when this reporter saw its keys gone: a new reporter starts
    # counting again, which only delays).
    deadline = policy.deadline
    wait = max(policy.settle_time, deadline)
    new = down - view.recorded
    decision.waiting = sorted(h for h in new if now - memory.first_seen[h] < wait)
    if decision.waiting:
        decision.due = min(memory.first_seen[h] + wait - now for h in decision.waiting)
    for host in sorted(new - set(decision.waiting) - view.pending):
        if policy.disable_ipmi_check:
            evidence = "not required (disable_ipmi_check)"
        elif deadline:
            evidence = (f"self-fenced: keys expired {now - memory.first_seen[host]:.1f}s "
                        f"ago, etcd_self_fence_deadline {deadline:g}s passed")
        else:
            evidence = "not confirmed (etcd has no fencing): UNKNOWN"
        decision.stopped.append(Stopped(host, policy.disable_ipmi_check or bool(deadline),
                                        evidence))
    decision.started = sorted(view.recorded & view.alive)
    decision.forget = sorted(view.recorded - view.hosts)  # unregistered by the operator
    return decision


def to_resend(records: dict, me: str, now: float, window: float) -> list[tuple[str, dict]]:
    """On taking over the election: the previous reporters' down records younger than
    ``window`` seconds (``now`` is epoch time), to be sent again. One that reporter queued
    but could not deliver before dying is not lost (Masakari answers 409 to a duplicate)."""
    return [(host, rec) for host, rec in sorted(records.items())
            if isinstance(rec, dict) and rec.get("by") != me
            and now - rec.get("at", 0) <= window]


def lease_lost(refreshed: dict, started: float, now: float, bound: float) -> str | None:
    """The watchdog's rule (monitors/watchdog.Feeder): why this host must stop feeding its
    watchdog, or None while it may keep running.

    ``refreshed``: network -> the monotonic time the last *successful* refresh of this
    host's lease on that network was sent (None: never). The lease then lasts at least
    until that time + TTL on the etcd side, so the peers cannot see this host's keys gone
    before it, nor report it NORMAL before that + etcd_self_fence_deadline. The peers
    report a host down only when its keys expired on *every* network: the newest refresh
    counts. ``started``: when this daemon began (a daemon that never held a lease counts
    from its start; the previous daemon's lease was refreshed before that)."""
    times = [t for t in refreshed.values() if t is not None]
    last = max(times) if times else started
    if now - last > bound:
        what = "its etcd leases on every network" if times else "no etcd lease since start"
        return (f"lost its peers: {what}, not refreshed for {now - last:.1f}s "
                f"(> watchdog_lease_bound {bound:g}s)")
    return None
