"""One container per monitor (kolla-ansible's shape): daemons in PID namespaces of their
own, sharing state_path as a volume (docs/install.md "Containers"). A lease's owner is
judged by its lock in <state_path>/owners (monitors/owners.py), not by a pid that names
another process, or none, in the reader's namespace."""
import json
import subprocess
import urllib.parse
import uuid

from monitors.history import ReadModel
from monitors.notification import VM, Notification
from monitors.outbox import Outbox
from tests.helpers import BIN, PID_NAMESPACE, cli, deliverer, wait_for, write_conf
from tests.fixtures.tcp_gate import TcpGate

ROWS = 24


def vm(hostname, i):
    return Notification.create(VM, hostname, {"event": "LIFECYCLE",
                                              "instance_uuid": str(uuid.UUID(int=i + 1)),
                                              "vir_domain_event": "STOPPED_FAILED"})


def test_two_pid_namespaces_on_one_state_path_post_every_row_once(tmp_path, masakari_api,
                                                                   host):
    """Two delivery daemons, each PID 1 of its own PID namespace, one state_path. The API
    does not answer (a gate holds every request): each daemon has its 2 workers' POSTs in
    flight, on rows it leased. One is SIGKILLed with its POSTs in flight (they never reach
    the API) and its container restarts it. Then the API answers. Every row is POSTed
    exactly once, and the rows the killed daemon held are taken over at once, not after
    the 600 s lease. (With owners judged by pid:starttime in /proc, each daemon takes the
    other's live leases — both are pid 1 with another start time — and rows go twice.)"""
    gate = TcpGate(urllib.parse.urlsplit(masakari_api.url).port)
    conf = write_conf(tmp_path / "monitors.conf", hostname=host,
                      state_path=tmp_path / "state", endpoint=gate.endpoint,
                      sections={"delivery": {"lease_seconds": 600, "http_timeout": 120,
                                             "workers": 2, "follow_recovery": "false"}})
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    for i in range(ROWS):
        box.put(vm(host, i), source="test", drivers=["masakari"])
    a = deliverer(conf, log=tmp_path / "a.log", pid_namespace=True).start()
    b = a2 = None
    try:
        wait_for(lambda: gate.held_posts() == 2, 20, what="the first daemon's 2 POSTs held")
        b = deliverer(conf, log=tmp_path / "b.log", pid_namespace=True).start()
        wait_for(lambda: gate.held_posts() == 4, 20, what="the second daemon's 2 POSTs held")
        a.kill()  # SIGKILL with 2 POSTs in flight; the API never saw them
        wait_for(lambda: len(gate.dropped) == 2, 10, what="the killed daemon's POSTs dropped")
        assert gate.held_posts() == 2
        a2 = deliverer(conf, log=tmp_path / "a2.log", pid_namespace=True).start()  # restarted
        wait_for(lambda: gate.held_posts() == 4, 20, what="the restarted daemon's 2 POSTs held")
        gate.open()  # the API answers
        wait_for(lambda: ReadModel(box).counts()["delivered"] == ROWS, 60,
                 what=f"all {ROWS} delivered (the lease is 600 s: none stranded)")
    finally:
        for d in (a2, b, a):
            if d is not None:
                d.stop()
        gate.close()
    sent: dict[str, list] = {}
    for p in masakari_api.posts(hostname=host):
        sent.setdefault(p.payload["instance_uuid"], []).append(p.status)
    assert sent == {str(uuid.UUID(int=i + 1)): [202] for i in range(ROWS)}, \
        "every row POSTed exactly once, each accepted"
    assert len(masakari_api.notifications(hostname=host)) == ROWS
    # The killed daemon's rows were taken over by another owner (its lock was free).
    attempts = [[h["by"] for h in ReadModel(box).get(nid)["history"]
                 if h["kind"] == "attempt"] for nid in range(1, ROWS + 1)]
    taken_over = [by for by in attempts if len(by) == 2]
    assert len(taken_over) == 2 and all(first != then for first, then in taken_over), attempts


def test_status_and_reload_of_a_daemon_in_another_pid_namespace(tmp_path, masakari_api, host):
    """`ha-monitors status` outside the daemon's PID namespace sees it running (its pid, 1
    there, is another process here); `ha-monitors reload` from yet another namespace
    refuses to signal a pid that is not its to signal, and says where to run it. Once
    the daemon is SIGKILLed, status says it is not running."""
    conf = write_conf(tmp_path / "monitors.conf", hostname=host,
                      state_path=tmp_path / "state", endpoint=masakari_api.endpoint)
    d = deliverer(conf, pid_namespace=True).start()
    try:
        doc = json.loads((tmp_path / "state" / "delivery.status.json").read_text())
        assert doc["pid"] == 1 and doc["state"] == "running"
        r = cli(conf, "status", "--daemon", "delivery", "--json")
        report = json.loads(r.stdout)
        assert [x["state"] for x in report["daemons"]] == ["running"], r.stdout
        r = subprocess.run([*PID_NAMESPACE, str(BIN / "ha-monitors"), "--config-file",
                            str(conf), "reload", "--daemon", "delivery", "--timeout", "5"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "another PID namespace" in r.stderr, r.stderr
        assert "docker kill --signal HUP" in r.stderr
        d.kill()
        r = cli(conf, "status", "--daemon", "delivery", "--json")
        assert r.returncode == 2
        assert [x["state"] for x in json.loads(r.stdout)["daemons"]] == ["dead"], r.stdout
    finally:
        d.stop()
        d.notify.close()
