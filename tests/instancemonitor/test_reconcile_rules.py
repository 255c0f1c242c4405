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


def test_report_journal_survives_a_kill_and_never_masks_a_later_failure(tmp_path):
    """What a restart learns from the report journal (domain_states.py): the state file
    still says running, the journal says the failure was handed over (or not)."""
    from instancemonitor.domain_states import DomainStates

    first = DomainStates(str(tmp_path))
    first.load()
    first.set("a", "a", "running")
    first.set("b", "b", "running")
    first.save()
    stored = first.intend("a", "STOPPED_FAILED", 100.0)
    first.stored(stored)                          # in the outbox...
    first.intend("b", "STOPPED_DESTROYED", 101.0)  # ...this one not (held, or cut short)
    with open(first.journal_path, "ab") as f:
        f.write(b'{"op": "intent", "uu')           # torn by the kill
    # killed here: no save

    again = DomainStates(str(tmp_path))
    again.load()
    known = again.snapshot()
    assert known["a"]["state"] == known["b"]["state"] == "running"
    assert again.intent_for("a", "STOPPED_FAILED", known["a"])["stored"] is True
    b = again.intent_for("b", "STOPPED_DESTROYED", known["b"])
    assert (b["stored"], b["t"]) == (False, 101.0)  # sent again as the same notification
    assert again.intent_for("a", "STOPPED_DESTROYED", known["a"]) is None

    # the reconcile recorded the listing and saved: the journal is emptied, and a later
    # failure of the same domain (restarted, failed again) is new, not "already recorded"
    again.set("a", "a", "shutoff")
    again.drop_loaded()
    again.save()
    assert open(again.journal_path).read() == ""
    again.set("a", "a", "running")
    again.save()
    third = DomainStates(str(tmp_path))
    third.load()
    assert third.intent_for("a", "STOPPED_FAILED", third.get("a")) is None


def test_an_intent_older_than_the_saved_state_is_ignored(tmp_path):
    """A journal that could not be emptied (a save between the report and the kill moved
    the domain on) never suppresses a new report."""
    from instancemonitor.domain_states import DomainStates

    states = DomainStates(str(tmp_path))
    states.load()
    states.set("a", "a", "running")
    token = states.intend("a", "STOPPED_FAILED", 100.0)
    states.stored(token)
    states.set("a", "a", "shutoff")  # its state change, then more: started again
    states.set("a", "a", "running")
    states.intend("z", "STOPPED_FAILED", 102.0)  # another report still open: no truncation
    states.save()
    assert open(states.journal_path).read() != ""
    again = DomainStates(str(tmp_path))
    again.load()
    assert again.intent_for("a", "STOPPED_FAILED", again.get("a")) is None
