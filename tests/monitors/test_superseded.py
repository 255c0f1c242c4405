"""A stale notification is not delivered: a failure whose condition cleared while it
waited in the outbox (API outage, management link down) is withdrawn as ``superseded``
instead of starting a recovery of something that is fine now. Real masakari-api, the
real delivery daemon (`ha-monitors deliver`) and the CLI an operator runs."""
import json
import uuid

from monitors.notification import COMPUTE_HOST, PROCESS, VM, Notification
from monitors.history import ReadModel
from monitors.outbox import Outbox
from tests.helpers import cli, deliverer, wait_for, write_conf

HOST_DOWN = {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "NORMAL"}
HOST_UP = {"event": "STARTED", "cluster_status": "ONLINE", "host_status": "NORMAL"}


def _settled(box, ids):
    return all(ReadModel(box).get(i)["state"] != "pending" for i in ids)


def _queue_outage(box, host, instance):
    """What sources queue while the API is unreachable: failures and their clearing."""
    put = lambda t, p: box.put(Notification.create(t, host, p), source="test",  # noqa: E731
                               drivers=["masakari"], decision={"test": "outage"}).id
    return {
        "host_down": put(COMPUTE_HOST, HOST_DOWN),
        "host_up": put(COMPUTE_HOST, HOST_UP),
        "proc_down": put(PROCESS, {"event": "STOPPED", "process_name": "nova-compute"}),
        "proc_up": put(PROCESS, {"event": "STARTED", "process_name": "nova-compute"}),
        "vm_failed": put(VM, {"event": "LIFECYCLE", "instance_uuid": instance,
                              "vir_domain_event": "STOPPED_FAILED"}),
        "vm_running": put(VM, {"event": "LIFECYCLE", "instance_uuid": instance,
                               "vir_domain_event": "STARTED_BOOTED"}),
    }


def test_cleared_failures_are_superseded_not_delivered(tmp_path, masakari_api, host):
    conf = write_conf(tmp_path / "m.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint=masakari_api.endpoint)
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    instance = str(uuid.uuid4())
    ids = _queue_outage(box, host, instance)
    # A host fault that is still true (no STARTED after it) is delivered as usual.
    other = f"{host}-b"
    masakari_api.ensure_host(other)
    current = box.put(Notification.create(COMPUTE_HOST, other, HOST_DOWN), source="test",
                      drivers=["masakari"]).id
    with deliverer(conf):
        wait_for(lambda: _settled(box, [*ids.values(), current]), 30, what="all settled")

    # Nothing of the cleared conditions reached the API: no evacuation, no service
    # disabled, no instance restarted.
    assert masakari_api.posts(hostname=host) == []  # not even sent
    stored = masakari_api.notifications(hostname=other)
    assert [n["payload"] for n in stored] == [HOST_DOWN]
    assert [(p.payload, p.status) for p in masakari_api.posts(hostname=other)] == \
        [(HOST_DOWN, 202)]  # POSTed once
    assert ReadModel(box).get(current)["state"] == "delivered"
    for name, nid in ids.items():
        assert ReadModel(box).get(nid)["state"] == "superseded", name

    # history says why, naming the notification that cleared it
    r = cli(conf, "history", "--host", host)
    assert r.returncode == 0, r.stderr
    block = r.stdout.split(f"#{ids['host_down']} ", 1)[1].split(f"#{ids['host_up']} ", 1)[0]
    assert " superseded " in block.splitlines()[0]
    assert (f"SUPERSEDED, not delivered: condition cleared before delivery: notification "
            f"{ids['host_up']} says the subject is healthy again") in block
    block = r.stdout.split(f"#{ids['host_up']} ", 1)[1]
    assert (f"the failure it clears (notification {ids['host_down']}) was withdrawn before "
            "delivery: nothing to clear") in block
    rows = json.loads(cli(conf, "history", "--json", "--type", "VM").stdout)
    kinds = {row["id"]: [h["kind"] for h in row["history"]] for row in rows}
    assert kinds[ids["vm_failed"]] == ["detected", "superseded"]  # never attempted

    # outbox list --state superseded; status and metrics count them
    r = cli(conf, "outbox", "list", "--state", "superseded")
    assert r.returncode == 0, r.stderr
    listed = {int(line.split()[0]) for line in r.stdout.splitlines()[1:] if line.strip()}
    assert listed == set(ids.values())
    assert ReadModel(box).counts()["superseded"] == 6
    r = cli(conf, "status")
    assert "6 superseded" in r.stdout, r.stdout


def test_started_after_a_delivered_stopped_goes_as_usual(tmp_path, masakari_api, host):
    """Once the failure was delivered, its clearing is delivered too (nothing withdrawn)."""
    conf = write_conf(tmp_path / "m.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint=masakari_api.endpoint)
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    down = box.put(Notification.create(PROCESS, host, {"event": "STOPPED",
                                                       "process_name": "libvirtd"}),
                   source="test", drivers=["masakari"]).id
    with deliverer(conf):
        wait_for(lambda: _settled(box, [down]), 30, what="STOPPED delivered")
        up = box.put(Notification.create(PROCESS, host, {"event": "STARTED",
                                                         "process_name": "libvirtd"}),
                     source="test", drivers=["masakari"]).id
        wait_for(lambda: _settled(box, [up]), 30, what="STARTED answered")
    assert ReadModel(box).get(down)["state"] == "delivered"
    assert ReadModel(box).get(up)["state"] == "delivered"
    assert [n["payload"]["event"] for n in masakari_api.notifications(hostname=host)] == \
        ["STOPPED", "STARTED"]
    assert [(p.payload["event"], p.status) for p in masakari_api.posts(hostname=host)] == \
        [("STOPPED", 202), ("STARTED", 202)]


def test_failure_again_after_clearing_is_delivered(tmp_path, masakari_api, host):
    """STOPPED, STARTED, STOPPED queued: the first two cancel out, the last is the truth."""
    conf = write_conf(tmp_path / "m.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint=masakari_api.endpoint)
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    put = lambda p: box.put(Notification.create(COMPUTE_HOST, host, p),  # noqa: E731
                            source="test", drivers=["masakari"]).id
    first, cleared, again = put(HOST_DOWN), put(HOST_UP), put(HOST_DOWN)
    with deliverer(conf):
        wait_for(lambda: _settled(box, [first, cleared, again]), 30, what="settled")
    assert [ReadModel(box).get(i)["state"] for i in (first, cleared, again)] == \
        ["superseded", "superseded", "delivered"]
    assert [n["payload"] for n in masakari_api.notifications(hostname=host)] == [HOST_DOWN]
    assert [(p.payload, p.status) for p in masakari_api.posts(hostname=host)] == \
        [(HOST_DOWN, 202)]  # the cleared ones never sent, the truth once
