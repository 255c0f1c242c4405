"""The etcd reporter's rules (hostmonitor.peers.etcd_decision.decide) without etcd: the
safety rules one at a time, asserted as the payloads Masakari would get (host_status
NORMAL = "fenced, evacuate it"; UNKNOWN = recorded, nothing recovered). The same rules
against a real 3-member etcd cluster and masakari-api: test_etcd_cluster.py."""
from __future__ import annotations

from hostmonitor import payloads
from hostmonitor.peers.etcd_decision import Memory, Policy, View, decide, to_resend

HOSTS = frozenset({"me", "a", "b", "c", "d"})
DEADLINE = 30.0


def view(**kw) -> View:
    base = dict(me="me", leader=True, hosts=HOSTS, alive=HOSTS)
    return View(**{**base, **kw})


def sent(decision) -> list[tuple[str, dict]]:
    """What goes to the outbox, as (hostname, payload)."""
    out = [(s.host, payloads.stopped(s.host, s.fenced).payload) for s in decision.stopped]
    return out + [(h, payloads.started(h).payload) for h in decision.started]


def normal(host):
    return (host, {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "NORMAL"})


def unknown(host):
    return (host, {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "UNKNOWN"})


def run(v: View, policy: Policy, times: list[float], memory: Memory | None = None):
    """Looks at the same view at each time, carrying the memory; the decisions."""
    memory = memory or Memory()
    out = []
    for t in times:
        d = decide(v, policy, memory, t)
        memory = d.memory
        out.append(d)
    return out


def test_normal_only_after_the_self_fence_deadline_counted_from_expiry():
    policy = Policy(settle_time=1.0, self_fence_deadline=DEADLINE)
    down = view(alive=HOSTS - {"a"})
    first, early, late, due = run(down, policy, [100.0, 100.0 + DEADLINE - 0.1,
                                                  100.0 + DEADLINE - 0.01, 100.0 + DEADLINE])
    for d in (first, early, late):
        assert sent(d) == [] and d.waiting == ["a"]  # keys gone, deadline not passed: nothing
    assert first.due == DEADLINE and abs(late.due - 0.01) < 1e-9  # judged when due
    assert sent(due) == [normal("a")] and due.waiting == [] and due.due is None
    assert due.stopped[0].evidence == (f"self-fenced: keys expired {DEADLINE:.1f}s ago, "
                                       f"etcd_self_fence_deadline {DEADLINE:g}s passed")


def test_without_self_fencing_a_dead_peer_is_unknown_never_normal():
    policy = Policy(settle_time=1.0, self_fence_deadline=0.0)
    first, settled = run(view(alive=HOSTS - {"a"}), policy, [10.0, 11.0])
    assert sent(first) == [] and first.waiting == ["a"]  # settle_time first
    assert sent(settled) == [unknown("a")]
    assert settled.stopped[0].evidence == "not confirmed (etcd has no fencing): UNKNOWN"


def test_disable_ipmi_check_is_normal_after_settling_without_the_deadline():
    policy = Policy(settle_time=1.0, self_fence_deadline=DEADLINE, disable_ipmi_check=True)
    first, settled = run(view(alive=HOSTS - {"a"}), policy, [10.0, 11.0])
    assert sent(first) == [] and sent(settled) == [normal("a")]
    assert settled.stopped[0].evidence == "not required (disable_ipmi_check)"


def test_a_new_reporter_counts_the_deadline_again():
    """A reporter that takes over has no memory of when the keys went: it waits the whole
    deadline again (only a delay, never an early NORMAL)."""
    policy = Policy(settle_time=1.0, self_fence_deadline=DEADLINE)
    (d,) = run(view(alive=HOSTS - {"a"}), policy, [1000.0])
    assert sent(d) == [] and d.due == DEADLINE


def test_only_the_leader_reports_and_an_isolated_host_reports_nobody():
    policy = Policy(settle_time=0.0)
    before = Memory({"a": 0.0})
    for v, why in ((view(alive=HOSTS - {"a"}, leader=False), "not the reporter"),
                   (view(alive=frozenset({"me"}), isolated="no etcd quorum on management"),
                    "isolated: no etcd quorum on management")):
        d = decide(v, policy, before, 100.0)
        assert sent(d) == [] and d.quiet == why
        assert d.memory is before  # nothing learnt from a look that does not count
        assert not d.mass_failure_began and not d.forget


def test_the_reporter_never_reports_itself():
    (d,) = run(view(alive=HOSTS - {"me"}), Policy(settle_time=0.0), [5.0])
    assert sent(d) == [] and d.down == frozenset()


def test_mass_failure_is_an_alert_not_an_evacuation_until_it_is_over():
    policy = Policy(mass_failure_fraction=0.5, settle_time=0.0, disable_ipmi_check=True)
    three_down = view(alive=frozenset({"me", "d"}))  # 3 of 5 > 0.5
    begin, still = run(three_down, policy, [1.0, 2.0])
    assert sent(begin) == [] and begin.mass_failure_began and begin.memory.mass_failure
    assert sent(still) == [] and not still.mass_failure_began  # the alert once
    over = decide(view(alive=HOSTS - {"a"}), policy, still.memory, 3.0)
    assert over.mass_failure_ended and not over.memory.mass_failure
    assert sent(over) == [normal("a")]
    # exactly the fraction is not a mass failure (more than it is)
    d = decide(view(alive=HOSTS - {"a", "b"}), Policy(mass_failure_fraction=0.4,
                                                      settle_time=0.0), Memory(), 1.0)
    assert not d.mass_failure_began and [h for h, _ in sent(d)] == ["a", "b"]


def test_reported_once_then_started_when_back_and_unregistered_records_forgotten():
    policy = Policy(settle_time=0.0)
    again = decide(view(alive=HOSTS - {"a"}, recorded=frozenset({"a"})), policy,
                   Memory({"a": 0.0}), 50.0)
    assert sent(again) == [] and again.waiting == []  # already reported: not again
    back = decide(view(recorded=frozenset({"a"})), policy, again.memory, 60.0)
    assert sent(back) == [("a", {"event": "STARTED", "cluster_status": "ONLINE",
                                 "host_status": "NORMAL"})]
    assert back.memory.first_seen == {}
    gone = decide(view(hosts=HOSTS - {"b"}, alive=HOSTS - {"b"}, recorded=frozenset({"b"})),
                  policy, Memory(), 1.0)
    assert sent(gone) == [] and gone.forget == ["b"]


def test_a_report_the_outbox_has_not_taken_is_not_sent_twice():
    d = decide(view(alive=HOSTS - {"a", "b"}, pending=frozenset({"a"})),
               Policy(settle_time=0.0, mass_failure_fraction=0.5), Memory(), 1.0)
    assert sent(d) == [unknown("b")]


def test_takeover_resends_the_previous_reporters_recent_reports_only():
    now = 10_000.0
    records = {"a": {"by": "old", "at": now - 5, "host_status": "NORMAL"},
               "b": {"by": "me", "at": now - 5},          # mine: the outbox has it
               "c": {"by": "old", "at": now - 500},       # older than the window
               "d": {}}                                   # unreadable record
    assert to_resend(records, "me", now, 120) == [("a", records["a"])]
