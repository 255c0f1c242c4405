"""Following the recovery after the 202 (monitors/follow.py), against the real masakari-api
without an engine: nothing ever processes the notifications, so they stay ``new`` and the
follow-up must give up at its bound, say so, and poll at the low, growing rate it claims,
by one process of those sharing the outbox. What the engine's real outcomes look like is
tests/engine/test_follow_recovery.py."""
from __future__ import annotations

import json
import re
import time
import uuid

from monitors import drivers
from monitors.delivery import DeliveryWorker
from monitors.follow import Follower
from monitors.history import ReadModel
from monitors.notification import VM, Notification
from monitors.outbox import Outbox
from tests.fixtures.http_proxy import FlakyProxy
from tests.helpers import cli, deliverer, recovery_conf, wait_for, write_conf

FOLLOW = {"follow_first_interval": 0.3, "follow_max_interval": 0.6, "follow_max_age": 3.0}


def _vm(host):
    return Notification.create(VM, host, {"event": "LIFECYCLE",
                                          "instance_uuid": str(uuid.uuid4()),
                                          "vir_domain_event": "STOPPED_FAILED"})


def _gets(proxy, remote_id):
    """The GETs of one notification the API received (through the recording proxy)."""
    return [s for s in proxy.seen if s[0] == "GET" and s[1].endswith(f"/notifications/{remote_id}")]


def test_no_engine_the_follow_up_gives_up_at_its_bound_and_says_so(tmp_path, masakari_api,
                                                                    host, caplog):
    proxy = FlakyProxy(masakari_api.url)
    proxy.seen = _Timed()
    try:
        conf = recovery_conf(tmp_path, masakari_api)
        conf.set_override("endpoint", proxy.url + "/v1", group="api")
        for key, value in FOLLOW.items():
            conf.set_override(key, value, group="delivery")
        box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
        worker = DeliveryWorker(conf, box, drivers.load(conf, ["masakari"]))
        worker.start()
        try:
            nid = box.put(_vm(host), source="test/vm", drivers=["masakari"]).id
            row = wait_for(lambda: ((r := ReadModel(box).get(nid))["deliveries"][0]
                                    ["recovery"] or {}).get("polls") and r, 10,
                           what="the first look")
            first = row["deliveries"][0]["recovery"]
            assert first["status"] == "new" and first["ended"] is None  # masakari's own
            done = wait_for(lambda: (r := ReadModel(box).get(nid))["deliveries"][0]
                            ["recovery"]["ended"] and r, 15, what="the follow-up's end")
        finally:
            worker.stop(5)
        d = done["deliveries"][0]
        recovery = d["recovery"]
        assert recovery["ended"] == "bound" and recovery["status"] == "new"
        # Every poll is one GET at microversion 1.0, and only the ones recorded.
        gets = _gets(proxy, d["remote_id"])
        assert len(gets) == recovery["polls"] and all(s[2] == 200 for s in gets)
        # The rate it claims: first look 0.3 s after the 202, then 0.3-0.6 s apart
        # (doubling from 0.3, capped at 0.6, jitter halves), the last within half an
        # interval of the 3 s bound: at most 1 + 2.7 / 0.3 polls, none after the bound.
        assert 2 <= recovery["polls"] <= 1 + 2.7 / 0.3, recovery
        gets_at = [s[3] for s in gets]
        assert min(b - a for a, b in zip(gets_at, gets_at[1:])) > 0.25, gets_at
        assert recovery["updated_at"] - recovery["delivered_at"] >= 3.0 - 0.3
        assert recovery["updated_at"] - recovery["delivered_at"] < 3.0 + 5.0
        # The history says what was seen and that it gave up (two rows, not one per poll).
        kinds = [h for h in done["history"] if h["kind"] == "recovery"]
        assert [(h["status"], h.get("ended")) for h in kinds] == [("new", None),
                                                                  ("new", "bound")]
        assert kinds[-1]["polls"] == recovery["polls"]
        assert any("no final recovery status from masakari within [delivery] "
                   "follow_max_age" in r.getMessage() for r in caplog.records)
        # Nothing is followed after the bound: a restarted follower has nothing to do.
        before = len(proxy.seen)
        assert Follower(conf, box, drivers.load(conf, ["masakari"])).run_once() is False
        assert len(proxy.seen) == before
    finally:
        proxy.close()


def test_history_and_status_report_the_unfinished_recovery_until_acknowledged(
        tmp_path, masakari_api, host):
    conf = write_conf(tmp_path / "m.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint=masakari_api.endpoint, sections={"delivery": FOLLOW})
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    nid = box.put(_vm(host), source="test/vm", drivers=["masakari"]).id
    with deliverer(conf):
        wait_for(lambda: (ReadModel(box).get(nid)["deliveries"][0]["recovery"] or {})
                 .get("ended"), 20, what="the follow-up's end")
    uuid_ = ReadModel(box).get(nid)["deliveries"][0]["remote_id"]
    r = cli(conf, "history")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "DETECTED", "TYPE", "HOST", "SUBJECT", "EVENT", "STATE",
                                "RECOVERY", "DELIVERY"]
    head = next(line for line in lines if line.startswith(f"#{nid} "))
    assert re.search(r" delivered +new\? +masakari:delivered\(202\) " + uuid_, head), head
    assert "masakari: recovery new (" in r.stdout
    assert re.search(r"masakari: recovery new, no final status within 3s \(\d+\.\ds after "
                     r"delivery, poll \d+\): no longer followed", r.stdout), r.stdout
    doc = json.loads(cli(conf, "history", "--json").stdout)
    recovery = next(row for row in doc if row["id"] == nid)["deliveries"][0]["recovery"]
    assert recovery["status"] == "new" and recovery["ended"] == "bound"

    status = json.loads(cli(conf, "status", "--json").stdout)
    found = [p for p in status["problems"] if f"notification {nid} " in p["text"]]
    assert [p["level"] for p in found] == ["WARNING"], status["problems"]
    assert "recovery still new when following gave up" in found[0]["text"]
    r = cli(conf, "outbox", "ack", str(nid), "--note", "engine was down, handled by hand")
    assert r.returncode == 0 and "recovery acknowledged" in r.stdout, (r.stdout, r.stderr)
    status = json.loads(cli(conf, "status", "--json").stdout)
    assert not [p for p in status["problems"] if f"notification {nid} " in p["text"]]
    r = cli(conf, "history")
    assert "acknowledged by the operator (recovery new): engine was down" in r.stdout


def test_three_daemons_sharing_an_outbox_poll_each_notification_once(tmp_path, masakari_api,
                                                                     host):
    """Three ``ha-monitors deliver`` daemons on one outbox, as instancemonitor,
    processmonitor and hostmonitor run on a compute host: each GET the API received is a
    poll one follow-up recorded (three independent followers would ask three times)."""
    proxy = FlakyProxy(masakari_api.url)
    proxy.seen = _Timed()
    daemons = []
    try:
        conf = write_conf(tmp_path / "m.conf", hostname=host, state_path=tmp_path / "state",
                          endpoint=proxy.url + "/v1", sections={"delivery": FOLLOW})
        box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
        for i in range(3):
            daemons.append(deliverer(conf, log=tmp_path / f"d{i}.log").start())
        ids = [box.put(_vm(host), source="test/vm", drivers=["masakari"]).id
               for _ in range(4)]

        def ended():
            rows = [ReadModel(box).get(i) for i in ids]
            return all((r["deliveries"][0]["recovery"] or {}).get("ended") for r in rows) \
                and rows
        rows = wait_for(ended, 30, what="every follow-up's end")
    finally:
        for d in daemons:
            d.stop()
            d.notify.close()
        proxy.close()
    owners = set()
    for row in rows:
        d = row["deliveries"][0]
        gets = _gets(proxy, d["remote_id"])
        assert len(gets) == d["recovery"]["polls"] <= 1 + 2.7 / 0.3, row
        # Never two looks at once: consecutive GETs are at least the shortest interval
        # (0.3 s, less the API's answer time) apart.
        gaps = [b[3] - a[3] for a, b in zip(gets, gets[1:])]
        assert gaps and min(gaps) > 0.25, gaps
        owners |= {h["by"] for h in row["history"] if h["kind"] == "recovery"}
    assert owners, rows


class _Timed(list):
    """The proxy's record of requests, each with when it was answered."""

    def append(self, item):
        super().append((*item, time.monotonic()))


def test_a_bad_answer_is_a_clear_error_and_following_goes_on(tmp_path, masakari_api, host):
    """What the driver says when it cannot read a status (never raises), and that the
    follower records it in the history and asks again."""
    proxy = FlakyProxy(masakari_api.url)
    try:
        conf = recovery_conf(tmp_path, masakari_api)
        driver = drivers.load(conf, ["masakari"])["masakari"]
        status, text = driver.recovery_status(str(uuid.uuid4()))
        assert status is None and text.startswith("404: No notification with id "), text
        conf.set_override("endpoint", masakari_api.url, group="api")  # no /v1
        driver.close()
        status, text = driver.recovery_status(str(uuid.uuid4()))
        assert status is None and "[api] endpoint end with /v1" in text, text
        driver.close()

        conf.set_override("endpoint", proxy.url + "/v1", group="api")
        for key, value in FOLLOW.items():
            conf.set_override(key, value, group="delivery")
        box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
        worker = DeliveryWorker(conf, box, drivers.load(conf, ["masakari"]))
        nid = box.put(_vm(host), source="test/vm", drivers=["masakari"]).id
        assert worker.run_once(nid)
        assert ReadModel(box).get(nid)["state"] == "delivered"
        with proxy._lock:
            proxy.script.append(502)  # what the first GET gets
        follower = worker.follower
        wait_for(lambda: follower.run_once(), 5, what="the first look")
        wait_for(lambda: follower.run_once(), 5, what="the second look")
        worker.stop(1)
        seen = [h for h in ReadModel(box).get(nid)["history"] if h["kind"] == "recovery"]
        assert seen[0]["status"] is None and seen[0]["error"].startswith("HTTP 502 from ")
        assert "(not a Masakari answer)" in seen[0]["error"]
        assert seen[1]["status"] == "new" and "error" not in seen[1]
    finally:
        proxy.close()


def test_a_restarted_process_takes_over_what_a_dead_one_was_following(tmp_path,
                                                                       masakari_api, host):
    """What to follow comes from the outbox: a delivery made while following was off is
    picked up when it is on; a follow-up claimed by a process that died (its lease names
    an owner whose lock nobody holds) is taken over at once, not after the lease."""
    conf = recovery_conf(tmp_path, masakari_api)
    for key, value in {**FOLLOW, "follow_max_age": 60.0, "follow_recovery": False}.items():
        conf.set_override(key, value, group="delivery")
    path = str(tmp_path / "state" / "outbox.sqlite")
    box = Outbox(path)
    worker = DeliveryWorker(conf, box, drivers.load(conf, ["masakari"]))
    nid = box.put(_vm(host), source="test/vm", drivers=["masakari"]).id
    assert worker.run_once(nid)
    assert not worker.follower.enabled
    conf.set_override("follow_recovery", True, group="delivery")
    dead = Outbox(path)
    dead.owner = "999999-00000000deadbeef"  # no lock held: what a SIGKILLed daemon leaves
    names = ["masakari"]
    wait_for(lambda: dead.claim_follow_up(names, time.time() - 60, 0.3, lease=600), 5,
             what="the dead process's claim")
    follower = Follower(conf, box, drivers.load(conf, names))
    assert follower.run_once()  # long before the 600 s lease ends
    rec = ReadModel(box).get(nid)["deliveries"][0]["recovery"]
    assert rec["status"] == "new" and rec["polls"] == 1
    dead.close()
    box.close()
