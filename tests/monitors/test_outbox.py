"""The outbox on a real SQLite file: durability settings, dedup, priority, leases, and
several processes claiming concurrently without double-claiming."""
import json
import multiprocessing
import os
import stat
import subprocess
import sys
import time
import uuid

import pytest

from monitors.notification import COMPUTE_HOST, PROCESS, VM, Notification
from monitors.delivery import backoff, expired
from monitors.history import ReadModel
from monitors.outbox import Outbox


def vm(i: int = 0) -> Notification:
    return Notification.create(VM, "h1", {"event": "LIFECYCLE",
                                          "instance_uuid": str(uuid.UUID(int=i + 1)),
                                          "vir_domain_event": "STOPPED_FAILED"})


def host(event="STOPPED", host_status=None) -> Notification:
    payload = {"event": event}
    if host_status:
        payload["host_status"] = host_status
    return Notification.create(COMPUTE_HOST, "h1", payload)


def proc(name="nova-compute") -> Notification:
    return Notification.create(PROCESS, "h1", {"event": "STOPPED", "process_name": name})


@pytest.fixture
def box(tmp_path):
    b = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    yield b
    b.close()


def test_file_is_private_and_durable(box, tmp_path):
    box.put(vm(), source="t", drivers=["masakari"])
    for suffix in ("", "-wal", "-shm"):
        path = tmp_path / "state" / f"outbox.sqlite{suffix}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert box._read("PRAGMA journal_mode")[0][0] == "wal"
    assert box._read("PRAGMA synchronous")[0][0] == 2  # FULL


def test_put_is_durable_before_return_even_if_the_process_dies(tmp_path):
    path = tmp_path / "outbox.sqlite"
    code = (f"import os; from monitors.outbox import Outbox; "
            f"from tests.monitors.test_outbox import vm; "
            f"Outbox({str(path)!r}).put(vm(7), source='t', drivers=['masakari']); os._exit(9)")
    r = subprocess.run([sys.executable, "-c", code], cwd=os.getcwd())
    assert r.returncode == 9
    rows = ReadModel(Outbox(str(path))).list()
    assert [r["notification"]["payload"]["instance_uuid"] for r in rows] == [str(uuid.UUID(int=8))]


def test_identical_pending_notification_is_not_queued_twice(box):
    first = box.put(host(), source="a", drivers=["masakari"])
    again = box.put(host(), source="b", drivers=["masakari"])
    assert first.queued and not again.queued and again.id == first.id
    assert ReadModel(box).depth() == 1
    kinds = [h["kind"] for h in ReadModel(box).get(first.id)["history"]]
    assert kinds == ["detected", "duplicate"]  # the repeat is visible, not lost
    # once delivered, the same notification is a new event again
    claim = box.claim(["masakari"], 30)
    box.finish(claim, "delivered", status=202, remote_id="u1")
    assert box.put(host(), source="c", drivers=["masakari"]).queued


def test_claim_takes_host_then_process_then_vm(box):
    for i in range(3):
        box.put(vm(i), source="t", drivers=["masakari"])
    box.put(proc(), source="t", drivers=["masakari"])
    box.put(host(), source="t", drivers=["masakari"])
    order = []
    while (claim := box.claim(["masakari"], 30)) is not None:
        order.append(claim.notification.type)
        box.finish(claim, "delivered", status=202, remote_id="x")
    assert order == [COMPUTE_HOST, PROCESS, VM, VM, VM]


def test_each_driver_is_tracked_separately(box):
    nid = box.put(host(), source="t", drivers=["masakari", "webhook"]).id
    c1 = box.claim(["masakari"], 30)
    box.finish(c1, "delivered", status=202, remote_id="u")
    assert ReadModel(box).get(nid)["state"] == "pending"  # the webhook delivery is still due
    c2 = box.claim(["webhook"], 30)
    assert c2.driver == "webhook"
    box.finish(c2, "rejected", status=400, message="bad")
    row = ReadModel(box).get(nid)
    assert row["state"] == "rejected"
    assert {d["driver"]: d["state"] for d in row["deliveries"]} == {
        "masakari": "delivered", "webhook": "rejected"}
    assert box.retry(nid) == 1
    assert ReadModel(box).get(nid)["state"] == "pending"


def finish_retry(box, claim, max_age):
    """A retry answer recorded as the delivery worker records it: expired once the row is
    [delivery] max_age old (the worker's decision), else pending and due now."""
    return box.finish(claim, "retry", state="expired" if expired(claim, max_age) else None)


def test_retry_waits_for_its_backoff_and_max_age_expires(box):
    nid = box.put(host(), source="t", drivers=["masakari"]).id
    claim = box.claim(["masakari"], 30)
    assert box.finish(claim, "retry", status=503, retry_in=60) == "pending"
    assert box.claim(["masakari"], 30) is None  # not due yet
    box._db.execute("UPDATE deliveries SET next_attempt_at = 0")
    # Detected 10 s ago (both clocks): on a fast machine the whole test takes under a
    # millisecond, so a tiny max_age alone would not make it old enough.
    box._db.execute("UPDATE notifications SET created_at = created_at - 10, "
                    "created_boot = created_boot - 10")
    claim = box.claim(["masakari"], 30)
    assert claim.attempt == 2
    assert finish_retry(box, claim, max_age=5) == "expired"
    assert ReadModel(box).get(nid)["state"] == "expired"


def test_a_live_lease_is_respected_and_a_dead_owners_lease_is_taken_over(box, tmp_path):
    box.put(host(), source="t", drivers=["masakari"])
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from monitors.outbox import Outbox; "
        f"c = Outbox({box.path!r}).claim(['masakari'], 3600); "
        "print(c.delivery_id, flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip()
        assert box.claim(["masakari"], 30) is None  # held by a live process
    finally:
        child.kill()
        child.wait()
    claim = box.claim(["masakari"], 30)  # the owner died: no need to wait an hour
    assert claim is not None and claim.attempt == 2


def _claimer(path, out):
    b = Outbox(path)
    got = []
    while (c := b.claim(["masakari"], 60)) is not None:
        got.append(c.notification_id)
        b.finish(c, "delivered", status=202, remote_id=str(c.notification_id))
    out.put(got)


def test_concurrent_processes_never_double_claim(box):
    ids = {box.put(vm(i), source="t", drivers=["masakari"]).id for i in range(300)}
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(box.path, out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(10)
    claimed = [i for r in results for i in r]
    assert sorted(claimed) == sorted(ids)  # every row exactly once
    assert ReadModel(box).counts()["delivered"] == 300


def test_backoff_is_capped_and_jittered():
    assert backoff(1, 1, 60, rng=lambda: 1.0) == 1
    assert backoff(4, 1, 60, rng=lambda: 1.0) == 8
    assert backoff(30, 1, 60, rng=lambda: 1.0) == 60
    assert backoff(30, 1, 60, rng=lambda: 0.0) == 30


def test_purge_removes_only_old_delivered_rows(box):
    delivered = box.put(vm(1), source="t", drivers=["masakari"]).id
    pending = box.put(vm(2), source="t", drivers=["masakari"]).id
    claim = box.claim(["masakari"], 30)
    box.finish(claim, "delivered", status=202, remote_id="u")
    assert claim.notification_id == delivered  # FIFO within the same priority
    assert box.purge_delivered(time.time() + 1) == 1
    read = ReadModel(box)
    assert read.get(delivered) is None and read.get(pending)["state"] == "pending"
    assert json.dumps(ReadModel(box).list())  # still readable, JSON-able


def test_a_later_notification_of_the_same_subject_waits_for_the_earlier(box):
    # UNKNOWN: starts no recovery, so it is not withdrawn when its STARTED is queued
    # (a NORMAL one would be superseded: tests/monitors/test_superseded.py)
    stopped = box.put(host("STOPPED", "UNKNOWN"), source="t", drivers=["masakari"]).id
    started = box.put(host("STARTED"), source="t", drivers=["masakari"]).id
    other = box.put(proc(), source="t", drivers=["masakari"]).id
    first = box.claim(["masakari"], 30)
    assert first.notification_id == stopped
    second = box.claim(["masakari"], 30)  # STARTED must not go while STOPPED is in flight
    assert second.notification_id == other
    assert box.claim(["masakari"], 30) is None
    box.finish(first, "retry", status=503, retry_in=0)
    third = box.claim(["masakari"], 30)
    assert third.notification_id == stopped  # the retry, still before STARTED
    box.finish(third, "delivered", status=202, remote_id="u")
    assert box.claim(["masakari"], 30).notification_id == started


def test_a_repeat_after_an_opposite_event_is_queued_not_merged(box):
    first = box.put(host("STOPPED", "UNKNOWN"), source="t", drivers=["masakari"])
    box.put(host("STARTED"), source="t", drivers=["masakari"])
    again = box.put(host("STOPPED", "UNKNOWN"), source="t", drivers=["masakari"])
    assert again.queued and again.id != first.id  # merging it would end on STARTED
    events = []
    while (claim := box.claim(["masakari"], 30)) is not None:
        events.append(claim.notification.payload["event"])
        box.finish(claim, "delivered", status=202, remote_id="x")
    assert events == ["STOPPED", "STARTED", "STOPPED"]


def test_retention_removes_old_finished_rows_never_pending_ones(tmp_path):
    """A real `ha-monitors deliver` daemon on an outbox with 40-day-old rows (created_at
    moved back in the file): delivered ones go with their history, pending, rejected and
    recent delivered ones stay."""
    import sqlite3

    from tests.helpers import cli, deliverer, wait_for, write_conf

    state = tmp_path / "state"
    box = Outbox(str(state / "outbox.sqlite"))
    ids = {}
    for name, outcome in (("old-delivered", "delivered"), ("old-rejected", "rejected"),
                          ("old-pending", None), ("new-delivered", "delivered")):
        ids[name] = box.put(Notification.create(PROCESS, "h1", {
            "event": "STOPPED", "process_name": name}), source="t", drivers=["masakari"]).id
        if outcome:
            box.finish(box.claim(["masakari"], 30, ids[name]), outcome, status=202)
    box.close()
    db = sqlite3.connect(state / "outbox.sqlite")
    db.execute("UPDATE notifications SET created_at = created_at - 40 * 86400 "
               "WHERE id IN (?, ?, ?)", (ids["old-delivered"], ids["old-rejected"],
                                         ids["old-pending"]))
    db.commit()
    db.close()
    conf = write_conf(tmp_path / "m.conf", hostname="h1", state_path=state, endpoint=None)
    with deliverer(conf) as daemon:
        wait_for(lambda: "1 delivered notification(s) older than 30 days removed"
                 in daemon.log_text(), 20, what="retention applied at start")
    box = Outbox(str(state / "outbox.sqlite"))
    try:
        left = {row["id"] for row in ReadModel(box).list()}
        assert left == {ids["old-rejected"], ids["old-pending"], ids["new-delivered"]}
        history = box._read("SELECT COUNT(*) FROM history WHERE notification_id = ?",
                            (ids["old-delivered"],))[0][0]
        assert history == 0
        assert cli(conf, "outbox", "show", str(ids["old-delivered"])).returncode == 1
    finally:
        box.close()


class SteppedClock:
    """time.time() of this process stepped by ``offset`` seconds, as NTP or `date -s` would
    step it (a real step of the machine's clock would disturb every other test running
    here). CLOCK_BOOTTIME and CLOCK_MONOTONIC are not affected, as in reality."""

    def __init__(self, monkeypatch):
        self.offset = 0.0
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + self.offset)


def test_a_clock_step_back_does_not_stall_a_retry_or_a_lease(box, monkeypatch):
    clock = SteppedClock(monkeypatch)
    nid = box.put(vm(), source="t", drivers=["masakari"]).id
    claim = box.claim(["masakari"], lease=30)
    box.finish(claim, "retry", retry_in=5)  # due in 5 s
    assert box.claim(["masakari"], lease=30) is None  # not yet due
    clock.offset = -3600  # the clock steps back an hour
    claim = box.claim(["masakari"], lease=30)
    assert claim is not None and claim.notification_id == nid  # due, not in 1 h 5 s
    # the lease just taken looks an hour long now; a further step back must not hold it
    clock.offset = -7200
    assert box.claim(["masakari"], lease=30) is not None


def test_a_clock_step_forward_does_not_expire_a_row(box, monkeypatch):
    clock = SteppedClock(monkeypatch)
    box.put(vm(), source="t", drivers=["masakari"])
    clock.offset = 7200  # two hours forward: by the wall clock the row is 2 h old
    claim = box.claim(["masakari"], lease=30)
    assert finish_retry(box, claim, max_age=3600) == "pending"
    # a row really detected over an hour ago (by the boot clock) does expire
    box._db.execute("UPDATE notifications SET created_boot = created_boot - 3700")
    claim = box.claim(["masakari"], lease=30)
    assert finish_retry(box, claim, max_age=3600) == "expired"


def test_a_row_from_an_earlier_boot_ages_by_the_wall_clock(box):
    box.put(vm(), source="t", drivers=["masakari"])
    box._db.execute("UPDATE notifications SET boot_id = 'earlier-boot', "
                    "created_at = created_at - 3700")
    claim = box.claim(["masakari"], lease=30)
    assert finish_retry(box, claim, max_age=3600) == "expired"


def test_an_outbox_file_of_an_older_version_gains_the_boot_columns(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    Outbox(str(path)).close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE notifications DROP COLUMN created_boot")
    db.execute("ALTER TABLE notifications DROP COLUMN boot_id")
    db.close()
    box = Outbox(str(path))
    try:
        box.put(vm(), source="t", drivers=["masakari"])
        assert box.claim(["masakari"], lease=30).created_boot is not None
    finally:
        box.close()
