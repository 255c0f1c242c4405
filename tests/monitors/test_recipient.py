"""The recipient's rules (monitors/recipient.py): which notifications start a recovery, and
how a new failure after a cleared one gets past masakari-api's duplicate check while a true
repeat does not. The API part runs against the real masakari-api and counts what it
answered to each POST."""
import datetime as dt
import json
import time

from monitors import recipient
from monitors.history import ReadModel
from monitors.notification import COMPUTE_HOST, PROCESS, VM, Notification, parse_time
from monitors.outbox import Outbox
from tests.helpers import cli, deliverer, wait_for, write_conf

T0 = dt.datetime(2026, 12, 6, 12, 0, 0)
DOWN = {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "NORMAL"}
DOWN_BARE = {"event": "STOPPED", "host_status": "NORMAL"}
UP = {"event": "STARTED", "cluster_status": "ONLINE", "host_status": "NORMAL"}


def at(seconds):
    return T0 + dt.timedelta(seconds=seconds)


def row(i, payload, seconds, state="delivered", ntype=COMPUTE_HOST):
    return recipient.Earlier(i, ntype, payload, at(seconds), state)


def test_what_starts_a_recovery_is_what_the_engine_acts_on():
    assert recipient.starts_recovery(COMPUTE_HOST, DOWN)
    # masakari-engine ignores a host STOPPED without host_status (manager.py), like UNKNOWN
    assert not recipient.starts_recovery(COMPUTE_HOST, {"event": "STOPPED"})
    assert not recipient.starts_recovery(COMPUTE_HOST, {**DOWN, "host_status": "UNKNOWN"})
    assert recipient.starts_recovery(PROCESS, {"event": "STOPPED", "process_name": "x"})
    assert recipient.starts_recovery(VM, {"event": "IO_ERROR",
                                          "vir_domain_event": "IO_ERROR_REPORT"})
    assert not recipient.starts_recovery(VM, {"event": "LIFECYCLE",
                                              "vir_domain_event": "STOPPED_DESTROYED"})


def test_a_first_failure_and_a_repeat_are_sent_as_detected():
    n = Notification(COMPUTE_HOST, "h", at(60), DOWN)
    assert recipient.distinct(n, []).notification == n
    # detected again with no clearing in between: the same failure
    enc = recipient.distinct(n, [row(1, DOWN, 0)])
    assert enc.notification == n and enc.not_before is None and enc.why is None
    # a clearing that Masakari never got (withdrawn) does not count
    enc = recipient.distinct(n, [row(2, UP, 30, "superseded"), row(1, DOWN, 0)])
    assert enc.notification == n and enc.why is None


def test_a_host_failure_after_a_clearing_goes_in_the_other_form_at_once():
    n = Notification(COMPUTE_HOST, "h", at(60), DOWN)
    enc = recipient.distinct(n, [row(2, UP, 30), row(1, DOWN, 0)])
    assert enc.notification.payload == DOWN_BARE
    assert enc.notification.generated_time == at(60) and enc.not_before is None
    assert enc.why["after"] == 2 and enc.why["same_payload"] == 1
    # outside the window nothing is in the way
    assert recipient.distinct(n, [row(2, UP, 30), row(1, DOWN, -200)]).why is None


def test_a_repeat_of_the_second_form_keeps_that_form():
    n = Notification(COMPUTE_HOST, "h", at(70), DOWN)
    enc = recipient.distinct(n, [row(3, DOWN_BARE, 60), row(2, UP, 30), row(1, DOWN, 0)])
    assert enc.notification.payload == DOWN_BARE and enc.why["repeat_of"] == 3


def test_when_every_form_is_taken_the_window_is_waited_out():
    n = Notification(COMPUTE_HOST, "h", at(90), DOWN)
    earlier = [row(4, UP, 80), row(3, DOWN_BARE, 60), row(2, UP, 30), row(1, DOWN, 0)]
    enc = recipient.distinct(n, earlier)
    assert enc.notification.payload == DOWN  # the form whose last use is oldest
    assert enc.notification.generated_time == at(181)
    assert enc.not_before == at(181).replace(tzinfo=dt.timezone.utc).timestamp()
    assert "held until then" in enc.why["why"]
    # a VM has one form only
    vm = {"event": "LIFECYCLE", "instance_uuid": "5d2b1c36-1f5f-4a8e-9b3e-0d5b2a1c9e11",
          "vir_domain_event": "STOPPED_FAILED"}
    n = Notification(VM, "h", at(20), vm)
    enc = recipient.distinct(n, [row(1, vm, 0, ntype=VM)], healthy_since=at(10))
    assert enc.notification.generated_time == at(181) and enc.why["healthy_since"]
    # seen healthy only before the last failure: a repeat
    assert recipient.distinct(n, [row(1, vm, 0, ntype=VM)], healthy_since=at(-5)).why is None


def test_the_real_api_takes_the_second_failure_and_answers_the_repeat_409(
        tmp_path, masakari_api, host):
    """Through the real delivery daemon and masakari-api (window 180 s, no engine: the host
    never goes on maintenance): STOPPED, STARTED, STOPPED are three 202s; the same failure
    detected again is 409 duplicate; a third failure within the window is held."""
    conf = write_conf(tmp_path / "m.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint=masakari_api.endpoint)
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    read = ReadModel(box)

    def put(payload):
        """What an operator (or Pacemaker's alert agent) runs: ha-monitors notify."""
        r = cli(conf, "notify", "--type", COMPUTE_HOST, "--hostname", host,
                "--payload", json.dumps(payload))
        assert r.returncode == 0, r.stderr
        return int(r.stdout.split()[1])

    def answers(nid):
        return [(h["status"], h["outcome"]) for h in read.get(nid)["history"]
                if h["kind"] == "answer"]

    with deliverer(conf):
        ids = []
        for payload in (DOWN, UP, DOWN, DOWN):
            ids.append(put(payload))
            wait_for(lambda: read.get(ids[-1])["state"] != "pending", 30,
                     what=f"notification {ids[-1]}")
        assert [answers(i) for i in ids] == [[(202, "delivered")], [(202, "delivered")],
                                             [(202, "delivered")], [(409, "duplicate")]]
        assert read.get(ids[2])["notification"]["payload"] == DOWN_BARE
        assert read.get(ids[3])["decision"]["distinct"]["repeat_of"] == ids[2]
        # a third failure after another clearing: both forms taken within 180 s
        ids.append(put(UP))
        wait_for(lambda: read.get(ids[-1])["state"] != "pending", 30, what="second STARTED")
        third = put(DOWN)
        time.sleep(1.0)
        row_ = read.get(third)
        assert row_["state"] == "pending" and answers(third) == []
        first_time = parse_time(read.get(ids[0])["notification"]["generated_time"])
        moved = parse_time(row_["notification"]["generated_time"])
        assert (moved - first_time).total_seconds() == 181
        masakari = row_["deliveries"][0]
        assert abs(masakari["next_attempt_at"]
                   - moved.replace(tzinfo=dt.timezone.utc).timestamp()) < 0.01
        # What the operator sees: why it waits, and it is not "late" before the window ends
        # (even when detected two minutes ago)
        r = cli(conf, "history", "--host", host)
        assert "masakari held until" in r.stdout and "no other form" in r.stdout, r.stdout
        box._db.execute("UPDATE notifications SET created_at = created_at - 120 WHERE id = ?",
                        (third,))
        assert read.oldest_pending_age(exclude_held=True) == 0.0
        r = cli(conf, "status")
        assert "oldest undelivered" not in r.stdout, r.stdout
    # What the API got: each POST above once, the repeat refused, the third not yet sent
    sent = [(p.payload, p.status) for p in masakari_api.posts(hostname=host)]
    assert sent == [(DOWN, 202), (UP, 202), (DOWN_BARE, 202), (DOWN_BARE, 409),
                    ({"event": "STARTED", "host_status": "NORMAL"}, 202)], sent



def test_a_new_reporter_knows_the_earlier_failure_from_the_cluster():
    """A reporter that did not report the node's first failure (the DC changed) has no row
    of it; the source's word of the earlier fencing stands in for it."""
    n = Notification(COMPUTE_HOST, "h", at(60), DOWN)
    # no local rows: the first failure's report (by another node) is assumed in the first
    # form, so the new one goes in the other
    enc = recipient.distinct(n, [], healthy_since=at(50), earlier_failure=at(0))
    assert enc.notification.payload == DOWN_BARE
    assert "saw the subject healthy" in enc.why["why"]
    # the same failure re-reported by a standby (the node was not seen healthy since the
    # earlier fencing... of this very failure): no earlier fencing known -> as detected
    assert recipient.distinct(n, [], healthy_since=at(50)).why is None
    # local rows win: this reporter sent the first failure itself
    enc = recipient.distinct(n, [row(2, UP, 30), row(1, DOWN, 0)], healthy_since=at(50),
                             earlier_failure=at(0))
    assert enc.notification.payload == DOWN_BARE and enc.why["after"] == 2
