"""What a reconnect reports, decided from last known states and the listing (pure)."""
from instancemonitor.libvirt_constants import CRASHED, PAUSED, RUNNING, SHUTOFF
from instancemonitor.reconcile import missed_events


def test_missed_events():
    known = {"a": {"name": "a", "state": "running"}, "b": {"name": "b", "state": "running"},
             "c": {"name": "c", "state": "running"}, "d": {"name": "d", "state": "shutoff"},
             "e": {"name": "e", "state": "running"}, "f": {"name": "f", "state": "running"},
             "g": {"name": "g", "state": "running"}, "h": {"name": "h", "state": "paused"}}
    listing = {"a": ("a", SHUTOFF, 6),   # failed
               "b": ("b", SHUTOFF, 5),   # saved: an intended operation
               "c": ("c", RUNNING, 1),
               "d": ("d", SHUTOFF, 2),   # was already off
               "e": ("e", PAUSED, 5),    # I/O error
               "f": ("f", CRASHED, 1),   # guest panic
               "h": ("h", SHUTOFF, 2)}   # g vanished
    got = {(m.uuid, m.vir_domain_event, m.now) for m in missed_events(known, listing)}
    assert got == {("a", "STOPPED_FAILED", "shutoff"), ("e", "SUSPENDED_IOERROR", "paused"),
                   ("f", "CRASHED_PANICKED", "crashed"), ("g", "STOPPED_FAILED", "vanished"),
                   ("h", "STOPPED_DESTROYED", "shutoff")}
