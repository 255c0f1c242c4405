"""election.covers: when a recorded report makes a standby's own report unnecessary."""
from __future__ import annotations

from hostmonitor.peers import crm, election


def rec(event: str, status: str, at: float) -> crm.Report:
    return crm.Report(event, status, at, "dc")


def test_normal_covers_unknown_never_the_reverse():
    assert election.covers(rec("STOPPED", "NORMAL", 100), "STOPPED", "UNKNOWN", 100)
    assert not election.covers(rec("STOPPED", "UNKNOWN", 100), "STOPPED", "NORMAL", 100)


def test_a_record_older_than_the_failure_covers_nothing():
    assert not election.covers(rec("STOPPED", "NORMAL", 90), "STOPPED", "NORMAL", 100)
    assert election.covers(rec("STOPPED", "NORMAL", 99), "STOPPED", "NORMAL", 100)  # clocks
    assert not election.covers(None, "STOPPED", "NORMAL", 100)


def test_the_node_back_since_the_failure_covers_its_stopped():
    assert election.covers(rec("STARTED", "NORMAL", 110), "STOPPED", "NORMAL", 100)
    assert election.covers(rec("STARTED", "NORMAL", 110), "STOPPED", "UNKNOWN", 100)
    # a STARTED just before a new failure (within the clock slack) does not cover it
    assert not election.covers(rec("STARTED", "NORMAL", 99), "STOPPED", "NORMAL", 100)
    # a STOPPED never covers a STARTED
    assert not election.covers(rec("STOPPED", "NORMAL", 110), "STARTED", "NORMAL", 100)
