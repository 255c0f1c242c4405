"""The daemon runtime as an operator meets it: real processes, the real API, SIGKILL in
the middle of delivery, sd_notify on a socket the test owns, SIGHUP and SIGTERM."""
import signal
import time
import uuid

import pytest

from monitors.notification import COMPUTE_HOST, PROCESS, VM, Notification
from monitors.history import ReadModel
from monitors.outbox import Outbox
from tests.helpers import Daemon, cli, deliverer, wait_for, write_conf


def vm(hostname, i):
    return Notification.create(VM, hostname, {"event": "LIFECYCLE",
                                              "instance_uuid": str(uuid.UUID(int=i + 1)),
                                              "vir_domain_event": "STOPPED_FAILED"})


@pytest.fixture
def conf(tmp_path, masakari_api, host):
    return write_conf(tmp_path / "monitors.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint=masakari_api.endpoint)


def test_100_queued_while_api_down_survive_sigkill_mid_delivery(tmp_path, conf, masakari_api,
                                                                 host):
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    masakari_api.kill()
    try:
        for i in range(100):
            box.put(vm(host, i), source="test", drivers=["masakari"])
        with deliverer(conf) as d:
            wait_for(lambda: ReadModel(box).get(1)["deliveries"][0]["attempts"] >= 2, 20,
                     what="attempts against the stopped API")
            assert ReadModel(box).depth() == 100
            masakari_api.start()
            wait_for(lambda: len(masakari_api.notifications(hostname=host)) >= 15, 30,
                     interval=0.01, what="some deliveries")
            d.kill()  # SIGKILL in the middle of delivery
            killed_at = time.time()
            stored_at_kill = len(masakari_api.notifications(hostname=host))
    finally:
        if not masakari_api.running:
            masakari_api.start()
    assert stored_at_kill < 100, "the kill should land in the middle of delivery"
    masakari_api.restart()
    with deliverer(conf, log=tmp_path / "second.log"):
        wait_for(lambda: ReadModel(box).counts()["delivered"] == 100, 60, what="all 100 delivered")
    stored = masakari_api.notifications(hostname=host)
    uuids = [n["payload"]["instance_uuid"] for n in stored]
    assert len(stored) == 100, "none lost, none stored twice"
    assert sorted(uuids) == sorted(str(uuid.UUID(int=i + 1)) for i in range(100))
    # What was *sent* (the API 409s a re-send and stores nothing, so the rows above cannot
    # show one): each row POSTed and accepted once; only a row in flight when the daemon
    # was killed (one per delivery worker, 2 by default) may be POSTed again by the second
    # daemon, answered 409 duplicate (docs/architecture.md "Exactly once at the API").
    sent: dict[str, list] = {}
    for p in masakari_api.posts(hostname=host):
        sent.setdefault(p.payload["instance_uuid"], []).append(p)
    assert sorted(sent) == sorted(uuids), "every row POSTed"
    again = {u: ps for u, ps in sent.items() if len(ps) > 1}
    assert all(p.status == 202 for ps in sent.values() for p in ps[:1]), sent
    assert len(again) <= 2, {u: [(p.status, p.at) for p in ps] for u, ps in again.items()}
    for u, (first, second, *more) in again.items():
        assert not more and first.at < killed_at < second.at and second.status == 409, \
            (u, [(p.status, p.at) for p in sent[u]], killed_at)
    remote = {d["remote_id"] for r in ReadModel(box).list() for d in r["deliveries"]}
    assert remote <= {n["notification_uuid"] for n in stored} | {None}


def test_backlog_is_delivered_host_first_then_process_then_vm(tmp_path, masakari_api, host):
    conf = write_conf(tmp_path / "monitors.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint=masakari_api.endpoint, sections={"delivery": {"workers": 1}})
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    masakari_api.kill()
    try:
        for i in range(12):  # an interleaved backlog: VM faults queued before host faults
            box.put(vm(host, i), source="t", drivers=["masakari"])
            if i % 4 == 1:
                box.put(Notification.create(PROCESS, host, {"event": "STOPPED",
                                                            "process_name": f"p{i}"}),
                        source="t", drivers=["masakari"])
            if i % 6 == 5:
                box.put(Notification.create(COMPUTE_HOST, host,
                                            {"event": "STOPPED", "cluster_status": "OFFLINE",
                                             # distinct payloads: the API 409s identical ones
                                             "host_status": ["NORMAL", "UNKNOWN"][i // 6]}),
                        source="t", drivers=["masakari"])
        with deliverer(conf):
            def attempts():
                return {r["notification"]["type"]: r["deliveries"][0]["attempts"]
                        for r in ReadModel(box).list()[::-1]}  # the first row of each type wins
            wait_for(lambda: attempts()[COMPUTE_HOST] >= 2, 20, what="probes of the down API")
            # the unreachable API is probed with the most urgent row, not hammered with all
            assert attempts()[VM] == 0 and attempts()[PROCESS] == 0
            masakari_api.start()
            wait_for(lambda: ReadModel(box).depth() == 0, 60, what="backlog delivered")
    finally:
        if not masakari_api.running:
            masakari_api.start()
    types = [n["type"] for n in masakari_api.notifications(hostname=host)]  # in stored order
    assert types == [COMPUTE_HOST] * 2 + [PROCESS] * 3 + [VM] * 12
    # in the order sent, each once (a re-send would be a 409 the stored rows do not show)
    assert [(p.type, p.status) for p in masakari_api.posts(hostname=host)] == \
        [(COMPUTE_HOST, 202)] * 2 + [(PROCESS, 202)] * 3 + [(VM, 202)] * 12


def test_sd_notify_ready_status_watchdog_stopping(tmp_path, conf):
    d = deliverer(conf, env={"WATCHDOG_USEC": "400000"})  # ping every 0.2 s
    d.start()
    try:
        ready = d.notify.wait_for("READY")
        assert ready["READY"] == "1" and int(ready["MAINPID"]) == d.proc.pid
        assert ready["WATCHDOG"] == "1"  # the first ping comes with READY
        assert "outbox 0 pending" in ready["STATUS"]
        wait_for(lambda: sum("WATCHDOG" in m for m in d.notify.drain()) >= 3, 10,
                 what="watchdog pings")
        d.signal(signal.SIGTERM)
        assert d.proc.wait(15) == 0
        stopping = d.notify.wait_for("STOPPING")
        assert stopping["STOPPING"] == "1"
    finally:
        d.stop()


def test_sighup_with_an_invalid_config_keeps_the_old_one(tmp_path, conf, masakari_api, host):
    with deliverer(conf) as d:
        good = conf.read_text()
        conf.write_text(good + "\n[delivery]\nhttp_timeout = soon\n")
        d.signal(signal.SIGHUP)
        wait_for(lambda: "new configuration rejected" in d.log_text(), 10, what="rejection")
        assert "http_timeout" in d.log_text()
        assert d.proc.poll() is None  # still running, still delivering
        conf.write_text(good)
        r = cli(conf, "notify", "--type", "PROCESS", "--payload",
                '{"event": "STOPPED", "process_name": "nova-compute"}')
        assert r.returncode == 0, r.stderr
        wait_for(lambda: masakari_api.notifications(hostname=host), 20,
                 what="delivery by the daemon after the rejected reload")


def test_notify_cli_wait_exit_codes(tmp_path, conf, masakari_api, host):
    payload = '{"event": "STOPPED", "host_status": "NORMAL", "cluster_status": "OFFLINE"}'
    r = cli(conf, "notify", "--type", "COMPUTE_HOST", "--payload", payload, "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    stored = masakari_api.notifications(hostname=host)
    assert [n["payload"]["cluster_status"] for n in stored] == ["OFFLINE"]
    assert stored[0]["notification_uuid"] in r.stdout
    assert [p.status for p in masakari_api.posts(hostname=host)] == [202]  # sent once
    r = cli(conf, "notify", "--type", "COMPUTE_HOST", "--hostname", "not-a-masakari-host",
            "--payload", payload, "--wait")
    assert r.returncode == 4 and "rejected" in r.stdout
    r = cli(conf, "notify", "--type", "VM", "--payload", '{"event": "LIFECYCLE"}')
    assert r.returncode == 2 and "payload.instance_uuid" in r.stderr
    r = cli(conf, "notify", "--type", "PROCESS", "--payload", "{not json")
    assert r.returncode == 2 and "--payload" in r.stderr
    masakari_api.kill()
    try:
        t0 = time.monotonic()
        r = cli(conf, "notify", "--type", "PROCESS", "--payload",
                '{"event": "STOPPED", "process_name": "libvirtd"}', "--wait", "--timeout", "1")
        assert r.returncode == 3 and time.monotonic() - t0 < 15  # pending, kept, bounded
    finally:
        masakari_api.start()
    r = cli(conf, "outbox", "list", "--state", "pending")
    assert "libvirtd" in r.stdout
    r = cli(conf, "outbox", "list", "--json")
    assert r.returncode == 0 and '"rejected"' in r.stdout


def test_outbox_show_retry_purge(tmp_path, conf, masakari_api):
    r = cli(conf, "notify", "--type", "COMPUTE_HOST", "--hostname", "unknown-host-x",
            "--payload", '{"event": "STOPPED"}', "--wait")
    assert r.returncode == 4
    r = cli(conf, "outbox", "show", "1")
    assert "rejected" in r.stdout and "could not be found" in r.stdout and "attempt" in r.stdout
    masakari_api.ensure_host("unknown-host-x")
    assert cli(conf, "outbox", "retry", "1").returncode == 0
    assert cli(conf, "outbox", "list", "--state", "pending").stdout.count("unknown-host-x") == 1
    with deliverer(conf):
        wait_for(lambda: "delivered" in cli(conf, "outbox", "list").stdout, 20,
                 what="retried row delivered")
    r = cli(conf, "outbox", "purge", "--delivered-before", "2999-01-01T00:00:00")
    assert "purged 1" in r.stdout
    assert cli(conf, "outbox", "show", "1").returncode == 1


def test_invalid_configuration_gives_clear_errors(tmp_path, conf):
    bad = tmp_path / "bad.conf"
    bad.write_text(conf.read_text() + "\n[delivery]\nmax_age = -5\ndrivers = masakari,pigeon\n"
                   "[process]\ncheck_intervall = 3\n")
    r = cli(bad, "check-config")
    assert r.returncode == 1
    assert "max_age" in r.stderr
    assert "pigeon" in r.stderr
    assert f"{bad}:" in r.stderr and "check_intervall: unknown option" in r.stderr
    d = Daemon("processmonitor", bad)
    d.start(wait_ready=False)
    assert d.proc.wait(30) == 2
    assert "max_age" in d.log_text()
    missing = tmp_path / "nope.conf"
    r = cli(missing, "check-config")
    assert r.returncode == 1 and "nope.conf" in r.stderr
    plist = tmp_path / "process_list.yaml"
    plist.write_text("- process_name: /usr/sbin/libvirtd\n"
                     "  restart_command: systemctl restart libvirtd\n")
    good = tmp_path / "good.conf"
    good.write_text(conf.read_text() + f"\n[process]\nprocess_list_path = {plist}\n")
    r = cli(good, "check-config")
    assert r.returncode == 0, r.stderr
