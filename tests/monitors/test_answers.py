"""Who answered matters. Through a real reverse proxy in front of the real masakari-api:
an answer that is not Masakari's own (a proxy's 404/413/422/502) is retried and named for
what it is, never parked as "rejected by masakari"; Masakari's own 400 is still final.
Masakari's 409 is split: a duplicate is delivered, "host is already under maintenance"
holds the notification (pending, visible in history, status and the journal) until an
operator ends the maintenance, then it is delivered."""
import itertools
import logging
import os
import uuid

import pytest

from monitors import status as status_mod
from monitors.history import ReadModel
from monitors.notification import COMPUTE_HOST, PROCESS, VM, Notification
from tests.fixtures.http_proxy import FlakyProxy
from tests.monitors.test_delivery import make_conf, worker_for


def host_down(hostname):
    return Notification.create(COMPUTE_HOST, hostname, {
        "event": "STOPPED", "host_status": "UNKNOWN", "cluster_status": "OFFLINE"})


@pytest.fixture
def lone_host(masakari_api):
    """A host alone in its own segment: Masakari refuses to change a host (maintenance on or
    off) while any notification of its segment is "new", and without an engine here every
    stored notification stays new."""
    name = f"maint-{os.getpid()}-{next(_lone)}"
    masakari_api.add_host(masakari_api.create_segment(f"seg-{name}"), name)
    return name


_lone = itertools.count(1)


@pytest.fixture
def outbox(tmp_path):
    from monitors.outbox import Outbox

    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    yield box
    box.close()


@pytest.mark.parametrize("code", [404, 413, 422, 502])
def test_a_proxy_error_is_retried_and_named_then_delivered(tmp_path, masakari_api, host,
                                                           outbox, code, caplog):
    proxy = FlakyProxy(masakari_api.url, [code, code])
    try:
        conf = make_conf(tmp_path, proxy.url + "/v1")
        nid = outbox.put(host_down(host), source="t", drivers=["masakari"]).id
        worker = worker_for(conf, outbox)
        with caplog.at_level(logging.WARNING, logger="monitors.delivery"):
            row = worker.deliver_now(nid, 20)
    finally:
        proxy.close()
    assert row["state"] == "delivered"
    assert row["deliveries"][0]["attempts"] == 3 and row["deliveries"][0]["last_status"] == 202
    stored = masakari_api.notifications(hostname=host)
    assert [n["payload"]["event"] for n in stored] == ["STOPPED"]
    # the proxy's answers never reached the API: it received the notification once
    assert [p.status for p in masakari_api.posts(hostname=host)] == [202]
    answers = [h for h in row["history"] if h["kind"] == "answer"]
    assert [a["outcome"] for a in answers] == ["retry", "retry", "delivered"]
    assert answers[0]["status"] == code
    assert answers[0]["message"] == (f"HTTP {code} from {proxy.url}/v1/notifications "
                                     "(not a Masakari answer): retrying")
    assert "REJECTED" not in caplog.text and "not a Masakari answer" in caplog.text
    assert [s for _, _, s in proxy.seen if s == code] == [code, code]


def test_masakaris_own_400_through_the_proxy_is_still_rejected(tmp_path, masakari_api,
                                                               outbox):
    proxy = FlakyProxy(masakari_api.url)
    try:
        conf = make_conf(tmp_path, proxy.url + "/v1")
        nid = outbox.put(host_down("host-unknown-to-masakari"), source="t",
                         drivers=["masakari"]).id
        row = worker_for(conf, outbox).deliver_now(nid, 20)
    finally:
        proxy.close()
    assert row["state"] == "rejected"
    assert row["deliveries"][0]["last_message"] == \
        "400: Host with name host-unknown-to-masakari could not be found."


def test_a_duplicate_409_is_delivered_with_the_apis_message(tmp_path, masakari_api, host,
                                                            outbox):
    conf = make_conf(tmp_path, masakari_api.endpoint)
    note = host_down(host)
    assert masakari_api.post_notification({"notification": note.to_dict()})[0] == 202
    nid = outbox.put(note, source="t", drivers=["masakari"]).id
    row = worker_for(conf, outbox).deliver_now(nid, 20)
    assert row["state"] == "delivered"
    answer = [h for h in row["history"] if h["kind"] == "answer"][-1]
    assert answer["outcome"] == "duplicate" and "is duplicate" in answer["message"]


def test_host_on_maintenance_holds_notifications_until_it_ends(tmp_path, masakari_api,
                                                               lone_host, outbox, caplog):
    host = lone_host
    conf = make_conf(tmp_path, masakari_api.endpoint, held_retry_interval=0.3)
    masakari_api.set_maintenance(host, True)
    process = outbox.put(Notification.create(PROCESS, host, {
        "event": "STARTED", "process_name": "/usr/bin/nova-compute"}),
        source="t", drivers=["masakari"]).id
    vm = outbox.put(Notification.create(VM, host, {
        "event": "LIFECYCLE", "instance_uuid": str(uuid.uuid4()),
        "vir_domain_event": "STOPPED_FAILED"}), source="t", drivers=["masakari"]).id
    worker = worker_for(conf, outbox)
    try:
        with caplog.at_level(logging.WARNING, logger="monitors.delivery"):
            for nid in (process, vm):
                row = worker.deliver_now(nid, 6)
                # held: pending, asked again with a capped backoff, never delivered or dropped
                assert row["state"] == "pending"
                delivery = row["deliveries"][0]
                assert delivery["attempts"] >= 2 and delivery["last_status"] == 409
                assert delivery["last_message"].startswith(
                    "held: host on maintenance in Masakari (409: Notification received from "
                    f"host {host} of type ")
                assert "is ignored as the host is already under maintenance" in \
                    delivery["last_message"]
                assert {h["outcome"] for h in row["history"] if h["kind"] == "answer"} == \
                    {"held"}
        assert f"notification {process} HELD by masakari: held: host on maintenance" in \
            caplog.text
        assert masakari_api.notifications(hostname=host) == []
        # ha-monitors status: a WARNING naming the row and the API's reason, not CRITICAL
        result = status_mod.collect(str(tmp_path / "state"), outbox, None,
                                    status_mod.Thresholds(pending_warn=0.1, pending_crit=0.2))
        held = [p for p in result["problems"] if "held: host on maintenance" in p["text"]]
        assert [p["level"] for p in held] == ["WARNING", "WARNING"]
        assert f"notification {process} (PROCESS {host})" in held[0]["text"]
        assert not [p for p in result["problems"] if p["text"].startswith("outbox: oldest")]
        assert result["outbox"]["held"] == 2
        import io

        out = io.StringIO()
        status_mod.render(result, out)
        assert "outbox: 2 pending, 2 held by the recipient" in out.getvalue()
        assert f"  WARNING: notification {process} (PROCESS {host}) held: host on " \
            "maintenance in Masakari" in out.getvalue()
    finally:
        masakari_api.set_maintenance(host, False)
    for nid in (process, vm):
        row = worker.deliver_now(nid, 10)
        assert row["state"] == "delivered"
        assert row["deliveries"][0]["last_status"] == 202
    stored = masakari_api.notifications(hostname=host)
    assert [n["type"] for n in stored] == ["PROCESS", "VM"]
    assert ReadModel(outbox).held() == []


def test_held_is_counted_in_metrics(tmp_path, masakari_api, lone_host, outbox):
    host = lone_host
    metrics = pytest.importorskip("monitors.metrics")
    if not metrics.AVAILABLE:
        pytest.skip("prometheus-client not installed")
    before = metrics.ANSWERS.labels("masakari", "held", "409")._value.get()
    conf = make_conf(tmp_path, masakari_api.endpoint, held_retry_interval=5)
    masakari_api.set_maintenance(host, True)
    try:
        nid = outbox.put(host_down(host), source="t", drivers=["masakari"]).id
        worker_for(conf, outbox).run_once(nid)
    finally:
        masakari_api.set_maintenance(host, False)
    assert metrics.ANSWERS.labels("masakari", "held", "409")._value.get() == before + 1


def test_a_masakari_bound_repeat_of_a_webhook_only_row_still_reaches_masakari(
        tmp_path, masakari_api, host, outbox):
    """Local dedup keys on the recipients too: the operator-only row (e.g. a decision routed
    to the webhook alone) must not swallow the identical one that goes to Masakari."""
    from tests.monitors.test_delivery import Receiver

    server = Receiver([])
    try:
        conf = make_conf(tmp_path, masakari_api.endpoint)
        conf.set_override("url", server.url, group="webhook")
        note = Notification.create(PROCESS, host, {"event": "STARTED",
                                                   "process_name": "/usr/bin/nova-compute"})
        first = outbox.put(note, source="t", drivers=["webhook"])
        second = outbox.put(note, source="t", drivers=["masakari"])
        again = outbox.put(note, source="t", drivers=["masakari"])
        assert first.queued and second.queued and second.id != first.id
        assert not again.queued and again.id == second.id  # same recipients: merged
        worker = worker_for(conf, outbox, ["masakari", "webhook"])
        assert worker.deliver_now(first.id, 20)["state"] == "delivered"
        assert worker.deliver_now(second.id, 20)["state"] == "delivered"
    finally:
        server.shutdown()
    stored = masakari_api.notifications(hostname=host)
    assert [(n["type"], n["payload"]["event"]) for n in stored] == [("PROCESS", "STARTED")]
    assert len(server.requests) == 1


def test_held_end_to_end_through_the_daemon_and_the_cli(tmp_path, masakari_api, lone_host):
    """As an operator meets it: `ha-monitors deliver` running, the host on maintenance in
    Masakari, a PROCESS STARTED handed over by `notify`: the journal says HELD, `status`
    exits 1 (WARNING) naming the row; maintenance ended, the row is delivered and status
    is OK again."""
    import json

    from tests.helpers import cli, deliverer, wait_for, write_conf

    host = lone_host
    conf = write_conf(tmp_path / "m.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint=masakari_api.endpoint,
                      sections={"delivery": {"held_retry_interval": 0.5}})
    masakari_api.set_maintenance(host, True)
    on_maintenance = True
    try:
        with deliverer(conf) as daemon:
            r = cli(conf, "notify", "--type", "PROCESS", "--payload",
                    '{"event": "STARTED", "process_name": "nova-compute"}')
            assert r.returncode == 0, r.stderr
            wait_for(lambda: "HELD by masakari: held: host on maintenance" in daemon.log_text(),
                     20, what="journal line")
            status = cli(conf, "status")
            assert status.returncode == 1, status.stdout
            assert status.stdout.startswith("WARNING: notification 1 (PROCESS "
                                            f"{host}) held: host on maintenance in Masakari")
            masakari_api.set_maintenance(host, False)
            on_maintenance = False
            wait_for(lambda: json.loads(cli(conf, "outbox", "list", "--json").stdout)[0]
                     ["state"] == "delivered", 20, what="delivered after maintenance")
            status = cli(conf, "status")
            assert status.returncode == 0, status.stdout
    finally:
        if on_maintenance:
            masakari_api.set_maintenance(host, False)
    stored = masakari_api.notifications(hostname=host)
    assert [(n["type"], n["payload"]["event"]) for n in stored] == [("PROCESS", "STARTED")]
