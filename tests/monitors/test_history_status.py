"""`ha-monitors history` and `ha-monitors status` as an operator runs them, against the real
masakari-api: what the history says must be what the API stored (same notification_uuid)."""
import json
import os
import queue
import signal
import subprocess
import threading
import time
import uuid

from monitors.notification import PROCESS, VM, Notification
from monitors.history import ReadModel
from monitors.outbox import Outbox
from tests.helpers import BIN, cli, deliverer, wait_for, write_conf


def _vm(host, instance=None):
    return Notification.create(VM, host, {"event": "LIFECYCLE",
                                          "instance_uuid": instance or str(uuid.uuid4()),
                                          "vir_domain_event": "STOPPED_FAILED"})


def test_history_tells_detection_decision_attempts_and_the_api_uuid(tmp_path, masakari_api,
                                                                   host):
    conf = write_conf(tmp_path / "m.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint=masakari_api.endpoint)
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    instance = str(uuid.uuid4())
    delivered = box.put(_vm(host, instance), source="instancemonitor/libvirt", drivers=["masakari"],
                        decision={"filter_row": "LIFECYCLE/STOPPED_FAILED", "line": 7}).id
    # An unregistered host: the API refuses it (400), it must show REJECTED with the reason.
    rejected = box.put(Notification.create(PROCESS, "no-such-host-" + uuid.uuid4().hex[:6],
                                           {"event": "STOPPED", "process_name": "nova-compute"}),
                       source="processmonitor/process", drivers=["masakari"],
                       decision={"attempts": ["exited with status 1"]}).id
    with deliverer(conf):
        wait_for(lambda: all(ReadModel(box).get(i)["state"] != "pending"
                             for i in (delivered, rejected)),
                 30, what="both answered")
    stored = [n for n in masakari_api.notifications(type="VM", hostname=host)
              if n["payload"]["instance_uuid"] == instance]
    assert len(stored) == 1
    assert [p.status for p in masakari_api.posts(type="VM", hostname=host)
            if p.payload["instance_uuid"] == instance] == [202]  # POSTed once

    r = cli(conf, "history")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "DETECTED", "TYPE", "HOST", "SUBJECT", "EVENT", "STATE",
                                "RECOVERY", "DELIVERY"]
    head = next(line for line in lines if line.startswith(f"#{delivered} "))
    assert instance in head and "LIFECYCLE/STOPPED_FAILED" in head and " delivered " in head
    assert stored[0]["notification_uuid"] in head
    block = r.stdout.split(head, 1)[1].split(f"#{rejected} ", 1)[0]
    assert "source    instancemonitor/libvirt" in block
    assert "decision  filter_row=LIFECYCLE/STOPPED_FAILED line=7" in block
    assert "masakari: attempt 1" in block
    assert f"masakari: delivered (202) notification_uuid {stored[0]['notification_uuid']}" \
        in block
    rejected_block = r.stdout.split(f"#{rejected} ", 1)[1]
    assert "rejected" in rejected_block.splitlines()[0]
    assert "-> REJECTED" in rejected_block and "(400)" in rejected_block

    # filters and JSON
    r = cli(conf, "history", "--type", "VM", "--json")
    rows = json.loads(r.stdout)
    assert [row["id"] for row in rows] == [delivered]
    answer = [h for h in rows[0]["history"] if h["kind"] == "answer"][0]
    assert answer["remote_id"] == stored[0]["notification_uuid"] and answer["status"] == 202
    r = cli(conf, "history", "--host", host, "--brief")
    assert f"#{delivered} " in r.stdout and f"#{rejected} " not in r.stdout
    assert "source " not in r.stdout  # brief: one line per alert
    time.sleep(1.1)
    assert "no alerts" in cli(conf, "history", "--since", "1s").stdout
    r = cli(conf, "history", "--since", "yesterday")
    assert r.returncode == 2 and "--since 'yesterday'" in r.stderr


def test_history_follow_prints_detection_and_answer_as_they_happen(tmp_path, masakari_api,
                                                                  host):
    conf = write_conf(tmp_path / "m.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint=masakari_api.endpoint)
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    old = box.put(_vm(host), source="test", drivers=["webhook"]).id  # listed, then followed
    follower = subprocess.Popen([str(BIN / "ha-monitors"), "--config-file", str(conf),
                                 "history", "--follow", "--json"],
                                stdout=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout],
                     daemon=True).start()
    try:
        assert json.loads(lines.get(timeout=20))["id"] == old  # the listing: one row per line
        with deliverer(conf):
            instance = str(uuid.uuid4())
            nid = box.put(_vm(host, instance), source="test", drivers=["masakari"],
                          decision={"row": 3}).id
            seen = []
            while not any(e.get("kind") == "answer" for e in seen):
                seen.append(json.loads(lines.get(timeout=30)))
        assert all(e["notification_id"] == nid for e in seen)
        detected = next(e for e in seen if e["kind"] == "detected")
        assert detected["notification_id"] == nid
        assert detected["notification"]["payload"]["instance_uuid"] == instance
        assert detected["decision"] == {"row": 3}
        answer = next(e for e in seen if e["kind"] == "answer")
        stored = [n for n in masakari_api.notifications(type="VM", hostname=host)
                  if n["payload"]["instance_uuid"] == instance]
        assert answer["remote_id"] == stored[0]["notification_uuid"]
    finally:
        follower.send_signal(signal.SIGINT)
        assert follower.wait(30) == 0  # Ctrl-C ends --follow cleanly


def test_status_is_a_nagios_check_of_daemons_sources_and_outbox(tmp_path, masakari_api, host):
    conf = write_conf(tmp_path / "m.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint=masakari_api.endpoint)
    r = cli(conf, "status")
    assert r.returncode == 3 and r.stdout.startswith("UNKNOWN: no daemon")

    daemon = deliverer(conf).start()
    try:
        r = cli(conf, "status")
        assert r.returncode == 0, r.stdout
        assert r.stdout.startswith("OK: 1 of 1 daemon(s) running")
        assert f"delivery  running  {daemon.proc.pid}" in r.stdout
        doc = json.loads(cli(conf, "status", "--json").stdout)
        assert doc["level"] == "OK" and doc["daemons"][0]["pid"] == daemon.proc.pid

        # an expected daemon that never ran is CRITICAL
        r = cli(conf, "status", "--daemon", "delivery", "--daemon", "instancemonitor")
        assert r.returncode == 2 and "instancemonitor: no status file" in r.stdout

        # a notification the API refuses needs an operator
        box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
        nid = box.put(_vm("no-such-host-" + uuid.uuid4().hex[:6]), source="test",
                      drivers=["masakari"]).id
        wait_for(lambda: ReadModel(box).get(nid)["state"] == "rejected", 30, what="rejected")
        r = cli(conf, "status")
        assert r.returncode == 2
        assert f"notification {nid} rejected by masakari" in r.stdout
        assert f"ha-monitors outbox show {nid}" in r.stdout
        assert cli(conf, "status", "--window", "0").returncode == 0
    finally:
        daemon.kill()  # SIGKILL: the status file still says running
        daemon.notify.close()
    r = cli(conf, "status", "--window", "0")
    assert r.returncode == 2
    assert f"delivery: not running (pid {daemon.proc.pid} is gone" in r.stdout


def test_status_warns_of_an_old_pending_notification_and_a_hung_daemon(tmp_path, host):
    """The API is unreachable (nothing listens): the row waits; a stopped (SIGSTOP) daemon
    stops updating its status file."""
    conf = write_conf(tmp_path / "m.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint="http://127.0.0.1:9/v1")
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    with deliverer(conf) as daemon:
        box.put(_vm(host), source="test", drivers=["masakari"])
        time.sleep(1.5)
        r = cli(conf, "status", "--pending-warn", "1")
        assert r.returncode == 1, r.stdout
        assert r.stdout.startswith("WARNING: outbox: oldest undelivered notification waits")
        r = cli(conf, "status", "--pending-warn", "0.5", "--pending-crit", "1")
        assert r.returncode == 2
        os.kill(daemon.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(2.5)
            r = cli(conf, "status", "--stale-after", "2", "--pending-warn", "3600",
                    "--pending-crit", "3600")
            assert r.returncode == 2
            assert "has not updated its status since" in r.stdout
        finally:
            os.kill(daemon.proc.pid, signal.SIGCONT)
