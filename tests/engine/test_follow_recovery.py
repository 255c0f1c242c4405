"""Following the recovery with the real masakari-engine (monitors/follow.py): after the
202, the daemons ask Masakari what the engine did, and an operator reads it in
``ha-monitors history``, ``status`` and the metrics.

The engine's real outcomes (masakari-engine.md, "Outcomes observed"): a VM STOPPED_FAILED
of an HA_Enabled server is recovered (finished); a COMPUTE_HOST STOPPED/NORMAL while Nova
(the recording stand-in) says the service is up cannot be evacuated
(error, retried, failed); a COMPUTE_HOST STOPPED/UNKNOWN is ignored."""
from __future__ import annotations

import json
import re
import time

import pytest

from monitors import drivers, metrics
from monitors.delivery import DeliveryWorker
from monitors.history import ReadModel
from monitors.notification import COMPUTE_HOST, VM, Notification
from monitors.outbox import Outbox
from tests.engine.conftest import new_host
from tests.helpers import cli, recovery_conf, wait_for, write_conf

FOLLOW = {"follow_first_interval": 0.5, "follow_max_interval": 2.0, "follow_max_age": 300.0}


@pytest.fixture
def follower(tmp_path, engine):
    """A delivery worker (with its follower) on an outbox in tmp_path/state, and the
    configuration file the CLI reads it with."""
    conf = recovery_conf(tmp_path, engine.api)
    for key, value in FOLLOW.items():
        conf.set_override(key, value, group="delivery")
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    worker = DeliveryWorker(conf, box, drivers.load(conf, ["masakari"]))
    worker.start()
    cli_conf = write_conf(tmp_path / "m.conf", hostname="cli", state_path=tmp_path / "state",
                          endpoint=engine.api.endpoint)
    yield box, cli_conf
    worker.stop(5)
    box.close()


def _followed(box, nid, timeout=120.0):
    """The notification once its follow-up ended."""
    def ended():
        row = ReadModel(box).get(nid)
        rec = row["deliveries"][0]["recovery"]
        return rec is not None and rec["ended"] is not None and row
    return wait_for(ended, timeout, interval=0.2, what=f"the follow-up of notification {nid}")


def _samples(box):
    out = {}
    for family in metrics.ServiceCollector(None)._outbox(box):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_history_status_and_metrics_show_what_the_engine_did(engine, nova, follower, record):
    box, conf = follower
    vm_host, bad_host, unknown_host = (new_host(engine, p) for p in ("fvm", "fbad", "funk"))
    new_host(engine, "fspare")  # somewhere to evacuate to
    server = nova.add_server(vm_host)
    nova.add_server(bad_host)
    t0 = time.time()
    cases = {
        "finished": box.put(Notification.create(VM, vm_host, {
            "event": "LIFECYCLE", "instance_uuid": server,
            "vir_domain_event": "STOPPED_FAILED"}), source="test/vm", drivers=["masakari"]).id,
        "failed": box.put(Notification.create(COMPUTE_HOST, bad_host, {
            "event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "NORMAL"}),
            source="test/host", drivers=["masakari"]).id,
        "ignored": box.put(Notification.create(COMPUTE_HOST, unknown_host, {
            "event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "UNKNOWN"}),
            source="test/host", drivers=["masakari"]).id,
    }
    rows = {want: _followed(box, nid) for want, nid in cases.items()}
    record(engine, vm_host, bad_host, unknown_host, note="followed recoveries")
    figures = {}
    for want, row in rows.items():
        d = row["deliveries"][0]
        rec = d["recovery"]
        # What we recorded is what the engine did (its own record, read back by the test).
        assert engine.notification(d["remote_id"])["status"] == want
        assert (rec["status"], rec["ended"]) == (want, "final"), row
        seen = [h for h in row["history"] if h["kind"] == "recovery"]
        assert seen[-1]["status"] == want and seen[-1]["ended"] == "final"
        figures[want] = (round(seen[-1]["after"], 1), rec["polls"],
                         [h["status"] for h in seen])
    print("delivery -> final status seen (s), polls, statuses recorded:", figures)
    assert nova.actions(vm_host) == [(server, "os-stop", 202), (server, "os-start", 202)]

    # history: the engine's outcome beside each delivered notification, and in its timeline
    r = cli(conf, "history")
    assert r.returncode == 0, r.stderr
    for want, nid in cases.items():
        head = next(line for line in r.stdout.splitlines() if line.startswith(f"#{nid} "))
        uuid_ = rows[want]["deliveries"][0]["remote_id"]
        assert re.search(rf" delivered +{want} +masakari:delivered\(202\) {uuid_}", head), head
    shown = {"finished": "finished", "failed": "FAILED", "ignored": "ignored"}
    for want, nid in cases.items():
        block = r.stdout.split(f"#{nid} ", 1)[1].split("\n#", 1)[0]
        assert re.search(rf"masakari: recovery {shown[want]} \(\d+\.\ds after delivery, "
                         r"poll \d+\)", block), block
    doc = json.loads(cli(conf, "history", "--json").stdout)
    assert {row["id"]: row["deliveries"][0]["recovery"]["status"] for row in doc} == \
        {nid: want for want, nid in cases.items()}

    # status: the failed recovery is CRITICAL (and only it), until acknowledged
    def problems():
        doc = json.loads(cli(conf, "status", "--json").stdout)
        return [p for p in doc["problems"] if "recovery" in p["text"]]
    found = problems()
    assert [p["level"] for p in found] == ["CRITICAL"], found
    assert f"notification {cases['failed']} (COMPUTE_HOST {bad_host}) recovery FAILED" \
        in found[0]["text"]
    s = _samples(box)
    assert s[("ha_monitors_recovery_notifications",
              (("status", "finished"), ("type", "VM")))] == 1
    assert s[("ha_monitors_recovery_notifications",
              (("status", "failed"), ("type", "COMPUTE_HOST")))] == 1
    assert s[("ha_monitors_recovery_notifications",
              (("status", "ignored"), ("type", "COMPUTE_HOST")))] == 1
    assert s[("ha_monitors_recovery_failures_unacknowledged", ())] == 1

    r = cli(conf, "outbox", "ack", str(cases["finished"]))
    assert r.returncode == 1, r.stdout  # nothing to acknowledge about a recovered VM
    r = cli(conf, "outbox", "ack", str(cases["failed"]), "--note", "evacuated by hand")
    assert r.returncode == 0, r.stderr
    assert problems() == []
    assert _samples(box)[("ha_monitors_recovery_failures_unacknowledged", ())] == 0
    r = cli(conf, "history")
    assert "acknowledged by the operator (recovery failed): evacuated by hand" in r.stdout
    assert time.time() - t0 < 300
