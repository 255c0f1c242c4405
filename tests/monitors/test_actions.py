"""Routing of the recovery-loop actions (force-down, resurrect): decided where a row enters
the outbox (the Emitter), recorded in its decision, and ordered by stages in the outbox.

What the actions do at Nova and Masakari is shown end to end, with the real engine, in
tests/engine/test_recovery_loop.py; here: which rows ask for them, and when they may go."""
import sqlite3
import time

import pytest

from hostmonitor import payloads
from monitors import actions, config
from monitors.notification import PROCESS, Notification
from monitors.history import ReadModel
from monitors.outbox import Outbox
from monitors.emitter import Emitter


def make_conf(tmp_path, **nova):
    conf = config.new_conf()
    conf([], project="x", default_config_files=[])
    conf.set_override("state_path", str(tmp_path / "state"))
    for key, value in nova.items():
        conf.set_override(key, value, group="nova")
    return conf


@pytest.fixture
def box(tmp_path):
    b = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    yield b
    b.close()


def drivers_of(row):
    return {d["driver"]: d["stage"] for d in row["deliveries"]}


def proc(event):
    return Notification.create(PROCESS, "cmp-1", {"event": event,
                                                  "process_name": "nova-compute"})


def test_fenced_host_failure_is_forced_down_first(tmp_path, box):
    emit = Emitter(make_conf(tmp_path, force_down=True), box, "hostmonitor/pacemaker")
    row = ReadModel(box).get(emit(payloads.stopped("cmp-1", fenced=True),
                                  decision={"fencing": "ok"}).id)
    assert drivers_of(row) == {actions.FORCE_DOWN: 0, "masakari": 1}
    assert "fencing confirmed" in row["decision"]["actions"][actions.FORCE_DOWN]
    assert row["decision"]["fencing"] == "ok"  # the source's own decision is kept
    assert row["history"][0]["first"] == [actions.FORCE_DOWN]


@pytest.mark.parametrize("note", [
    payloads.stopped("cmp-1", fenced=False),           # not fenced: UNKNOWN
    payloads.started("cmp-1"),
    Notification.create("COMPUTE_HOST", "cmp-1", {"event": "STOPPED"}),  # no host_status
    proc("STOPPED"),
])
def test_nothing_but_a_fenced_host_is_ever_forced_down(tmp_path, box, note):
    emit = Emitter(make_conf(tmp_path, force_down=True, resurrect=True), box, "t")
    row = ReadModel(box).get(emit(note).id)
    assert actions.FORCE_DOWN not in drivers_of(row)


def test_normal_without_fencing_evidence_is_not_forced_down(tmp_path, box):
    conf = make_conf(tmp_path, force_down=True)
    conf.set_override("disable_ipmi_check", True, group="host")
    row = ReadModel(box).get(Emitter(conf, box, "t")(payloads.stopped("cmp-1", fenced=True)).id)
    assert drivers_of(row) == {"masakari": 1}
    assert "disable_ipmi_check" in row["decision"]["actions"][actions.FORCE_DOWN]


def test_force_down_is_off_by_default(tmp_path, box):
    emit = Emitter(make_conf(tmp_path), box, "t")
    row = ReadModel(box).get(emit(payloads.stopped("cmp-1", fenced=True)).id)
    assert drivers_of(row) == {"masakari": 1}
    assert "actions" not in row["decision"]


def test_resurrect_follows_a_fenced_stop_only_when_enabled(tmp_path, box):
    emit = Emitter(make_conf(tmp_path, resurrect=True), box, "t")
    emit(payloads.stopped("cmp-1", fenced=True))
    row = ReadModel(box).get(emit(payloads.started("cmp-1")).id)
    assert actions.RESURRECT in drivers_of(row)
    assert "put it back in service" in row["decision"]["actions"][actions.RESURRECT]
    # not fenced before: Masakari recovered nothing, nothing to undo
    emit(payloads.stopped("cmp-2", fenced=False))
    assert actions.RESURRECT not in drivers_of(
        ReadModel(box).get(emit(payloads.started("cmp-2")).id))
    # a STARTED with nothing before it (daemon start) asks for nothing
    assert actions.RESURRECT not in drivers_of(
        ReadModel(box).get(emit(payloads.started("cmp-3")).id))
    # off (the default): never
    off = Emitter(make_conf(tmp_path), box, "t")
    off(payloads.stopped("cmp-4", fenced=True))
    assert actions.RESURRECT not in drivers_of(
        ReadModel(box).get(off(payloads.started("cmp-4")).id))


def test_resurrect_follows_a_process_stop(tmp_path, box):
    emit = Emitter(make_conf(tmp_path, resurrect=True), box, "processmonitor/processes")
    emit(proc("STOPPED"))
    row = ReadModel(box).get(emit(proc("STARTED")).id)
    assert drivers_of(row) == {"masakari": 1, actions.RESURRECT: 1}


def test_no_resurrect_after_a_stop_masakari_refused(tmp_path, box):
    emit = Emitter(make_conf(tmp_path, resurrect=True), box, "t")
    stopped = emit(proc("STOPPED")).id
    claim = box.claim(["masakari"], 60)
    box.finish(claim, "rejected", status=400, message="400: host not found")
    assert claim.notification_id == stopped
    assert actions.RESURRECT not in drivers_of(ReadModel(box).get(emit(proc("STARTED")).id))


def test_a_later_stage_waits_for_the_first_then_goes(box):
    nid = box.put(payloads.stopped("cmp-1", fenced=True), source="t",
                  drivers=[actions.FORCE_DOWN, "masakari"], first=[actions.FORCE_DOWN]).id
    assert box.claim(["masakari"], 60) is None           # held behind the force-down
    assert box.next_due(["masakari"]) is None            # and not due: no busy loop
    first = box.claim([actions.FORCE_DOWN, "masakari"], 60)
    assert first.driver == actions.FORCE_DOWN
    assert box.claim(["masakari"], 60) is None           # still in flight
    box.finish(first, "delivered", status=200)
    second = box.claim(["masakari"], 60)
    assert (second.driver, second.notification_id) == ("masakari", nid)


def test_a_failing_first_stage_holds_the_rest_only_for_stage_hold(box):
    box.put(payloads.stopped("cmp-1", fenced=True), source="t",
            drivers=[actions.FORCE_DOWN, "masakari"], first=[actions.FORCE_DOWN])
    first = box.claim([actions.FORCE_DOWN], 60)
    box.finish(first, "retry", message="Nova unreachable", retry_in=60)
    assert box.claim(["masakari"], 60, stage_hold=30) is None
    time.sleep(0.05)
    late = box.claim(["masakari"], 60, stage_hold=0.01)  # the hold ran out: go anyway
    assert late is not None and late.driver == "masakari"


def test_a_rejected_first_stage_releases_the_rest(box):
    box.put(payloads.stopped("cmp-1", fenced=True), source="t",
            drivers=[actions.FORCE_DOWN, "masakari"], first=[actions.FORCE_DOWN])
    first = box.claim([actions.FORCE_DOWN], 60)
    box.finish(first, "rejected", status=404, message="no nova-compute")
    assert box.claim(["masakari"], 60).driver == "masakari"


def test_an_outbox_from_before_stages_is_upgraded(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""CREATE TABLE deliveries (id INTEGER PRIMARY KEY,
        notification_id INTEGER NOT NULL, driver TEXT NOT NULL, state TEXT NOT NULL,
        priority INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL, lease_owner TEXT, lease_until REAL, remote_id TEXT,
        last_status INTEGER, last_message TEXT, updated_at REAL NOT NULL,
        UNIQUE (notification_id, driver));""")
    db.close()
    b = Outbox(str(path))
    nid = b.put(proc("STOPPED"), source="t", drivers=["masakari"]).id
    assert b.claim(["masakari"], 60).notification_id == nid
    b.close()


def test_the_pacemaker_alert_path_is_routed_too(tmp_path):
    """ha-pacemaker-alert queues through `ha-monitors notify`: the same routing applies."""
    import json
    import subprocess
    import sys

    state = tmp_path / "state"
    conf = tmp_path / "m.conf"
    conf.write_text(f"[DEFAULT]\nhostname = cmp-0\nstate_path = {state}\n"
                    "[api]\nauth_type = none\nendpoint = http://127.0.0.1:9/v1\n"
                    "[nova]\nforce_down = true\n")
    fenced = json.dumps({"event": "STOPPED", "cluster_status": "OFFLINE",
                         "host_status": "NORMAL"})
    out = subprocess.run([sys.executable, "-m", "monitors.cli", "--config-file", str(conf),
                          "notify", "--type", "COMPUTE_HOST", "--hostname", "cmp-1",
                          "--payload", fenced, "--source", "hostmonitor/pacemaker-alert"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    b = Outbox(str(state / "outbox.sqlite"))
    row = ReadModel(b).list()[0]
    b.close()
    assert drivers_of(row) == {actions.FORCE_DOWN: 0, "masakari": 1}
    assert row["decision"]["by"] == "ha-monitors notify"
