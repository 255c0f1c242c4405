"""The one damper (local matrix actions, Pacemaker peers) and the one COMPUTE_HOST payload
module. Pure code: a clock the test moves; the daemons' behaviour on real links and a
real cluster is in test_links.py and tests/hostmonitor/peers."""
from __future__ import annotations

from hostmonitor import payloads
from hostmonitor.damper import Damper


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_value_settles_after_samples_in_a_row_and_the_hold_down():
    clock = Clock()
    d = Damper(samples=3, hold_down=10.0, clock=clock)
    assert not d.settled("k") and d.streak("k") is None and d.wait_left("k") == 0.0
    assert d.observe("k", "down").count == 1
    clock.now += 4
    assert d.observe("k", "down").count == 2
    clock.now += 4
    s = d.observe("k", "down")
    assert (s.value, s.count, s.since, s.changed) == ("down", 3, 100.0, False)
    assert not d.settled("k")            # three samples, but held 8 s of 10
    assert d.wait_left("k") == 2.0 and d.held("k") == 8.0
    clock.now += 2
    assert d.settled("k") and d.wait_left("k") == 0.0


def test_another_value_restarts_the_streak_and_counts_a_flap():
    clock = Clock()
    d = Damper(samples=2, clock=clock)
    d.observe("n1", True)
    d.observe("n1", True)
    assert d.settled("n1")
    clock.now += 1
    s = d.observe("n1", False)
    assert (s.count, s.since, s.changed) == (1, 101.0, True) and not d.settled("n1")
    d.observe("n1", True)
    d.observe("n2", False)               # keys are independent; a first value is no flap
    assert d.flaps == {"n1": 2} and d.flap_total() == 2
    assert d.observe("n2", False).count == 2 and d.settled("n2") and not d.settled("n1")


def test_reconfigure_keeps_streaks_and_forget_starts_afresh():
    d = Damper(samples=5, clock=Clock())
    for _ in range(3):
        d.observe("k", ("report_host_failure",))
    d.configure(samples=3, hold_down=0.0)
    assert d.settled("k")
    d.forget("k")
    s = d.observe("k", ())
    assert s.count == 1 and not s.changed and d.flap_total() == 0


def test_only_a_confirmed_fencing_says_normal():
    assert payloads.peer_down(True) == {"event": "STOPPED", "cluster_status": "OFFLINE",
                                        "host_status": "NORMAL"}
    assert payloads.peer_down(False)["host_status"] == "UNKNOWN"
    own = [payloads.unfit("h"), payloads.operator_notice("h"), payloads.drain("h"),
           payloads.drain_release("h")]
    assert all(n.payload["host_status"] == "UNKNOWN" for n in own)
    assert payloads.unfit("h").payload == {"event": "STOPPED", "cluster_status": "OFFLINE",
                                           "host_status": "UNKNOWN"}
    assert payloads.started("h").payload == {"event": "STARTED", "cluster_status": "ONLINE",
                                             "host_status": "NORMAL"}
    # the drain notice and the operator notice never look like a repeat of each other
    assert payloads.drain("h").payload != payloads.operator_notice("h").payload
    # fresh dicts: a caller that changes one changes nobody else's
    payloads.back_up()["host_status"] = "UNKNOWN"
    assert payloads.back_up()["host_status"] == "NORMAL"
    n = payloads.stopped("cmp-1", fenced=True)
    assert (n.type, n.hostname) == ("COMPUTE_HOST", "cmp-1")
