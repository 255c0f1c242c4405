"""Each answer class of the recovery API leads to its outbox state, asserted on what the
real masakari-api stored. 401/403 and 5xx cannot be produced by masakari-api under noauth2,
so those classes are shown through the webhook driver against a small real HTTP receiver
(both drivers share monitors.drivers.classify)."""
import http.server
import json
import threading
import uuid

import pytest

from monitors import config, drivers
from monitors.delivery import DeliveryWorker
from monitors.drivers.webhook import SIGNATURE_HEADER, signature
from monitors.notification import COMPUTE_HOST, VM, Notification
from monitors.history import ReadModel
from monitors.outbox import Outbox


def make_conf(tmp_path, endpoint, **delivery):
    conf = config.new_conf()
    conf([], project="x", default_config_files=[])
    conf.set_override("state_path", str(tmp_path / "state"))
    conf.set_override("auth_type", "none", group="api")
    conf.register_opts([], group="api")
    from keystoneauth1 import loading as ks_loading

    ks_loading.load_auth_from_conf_options(conf, "api")  # registers the 'none' plugin options
    conf.set_override("endpoint", endpoint, group="api")
    overrides = {"retry_initial_interval": 0.05, "retry_max_interval": 0.2, "http_timeout": 3,
                 **delivery}
    for key, value in overrides.items():
        conf.set_override(key, value, group="delivery")
    return conf


def vm(hostname, i=1):
    return Notification.create(VM, hostname, {"event": "LIFECYCLE",
                                              "instance_uuid": str(uuid.uuid4()),
                                              "vir_domain_event": "STOPPED_FAILED"})


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    yield box
    box.close()


def worker_for(conf, box, names=("masakari",)):
    conf.set_override("drivers", list(names), group="delivery")
    return DeliveryWorker(conf, box, drivers.load(conf, names))


def test_202_is_delivered_with_the_api_uuid(tmp_path, masakari_api, host, outbox):
    conf = make_conf(tmp_path, masakari_api.endpoint)
    nid = outbox.put(vm(host), source="t", drivers=["masakari"]).id
    row = worker_for(conf, outbox).deliver_now(nid, 20)
    stored = masakari_api.notifications(hostname=host)
    assert row["state"] == "delivered"
    assert row["deliveries"][0]["remote_id"] == stored[0]["notification_uuid"]
    assert row["deliveries"][0]["last_status"] == 202
    assert stored[0]["payload"] == row["notification"]["payload"]
    assert [p.status for p in masakari_api.posts(hostname=host)] == [202]  # POSTed once


def test_409_duplicate_counts_as_delivered(tmp_path, masakari_api, host, outbox):
    conf = make_conf(tmp_path, masakari_api.endpoint)
    note = vm(host)
    status, _ = masakari_api.post_notification({"notification": note.to_dict()})
    assert status == 202  # the API already has it (e.g. we died before recording the 202)
    nid = outbox.put(note, source="t", drivers=["masakari"]).id
    row = worker_for(conf, outbox).deliver_now(nid, 20)
    assert row["state"] == "delivered"
    assert row["deliveries"][0]["last_status"] == 409
    assert len(masakari_api.notifications(hostname=host)) == 1
    # the test's own POST, then the driver's, once
    assert [p.status for p in masakari_api.posts(hostname=host)] == [202, 409]


def test_400_is_rejected_kept_and_not_retried(tmp_path, masakari_api, outbox):
    conf = make_conf(tmp_path, masakari_api.endpoint)
    nid = outbox.put(vm("host-unknown-to-masakari"), source="t", drivers=["masakari"]).id
    worker = worker_for(conf, outbox)
    row = worker.deliver_now(nid, 20)
    assert row["state"] == "rejected"
    assert row["deliveries"][0]["last_status"] == 400
    assert "could not be found" in row["deliveries"][0]["last_message"]
    assert not worker.run_once()  # nothing left to try
    assert ReadModel(outbox).get(nid)["deliveries"][0]["attempts"] == 1


def test_unreachable_api_is_retried_until_it_answers(tmp_path, masakari_api, host, outbox):
    conf = make_conf(tmp_path, masakari_api.endpoint)
    nid = outbox.put(vm(host), source="t", drivers=["masakari"]).id
    worker = worker_for(conf, outbox)
    masakari_api.kill()
    try:
        row = worker.deliver_now(nid, 1.0)
        assert row["state"] == "pending"
        assert row["deliveries"][0]["attempts"] >= 2
        assert row["deliveries"][0]["last_status"] is None
    finally:
        masakari_api.start()
    row = worker.deliver_now(nid, 20)
    assert row["state"] == "delivered"
    assert len(masakari_api.notifications(hostname=host)) == 1
    # the attempts against the killed API never reached it; the one that did, once
    assert [p.status for p in masakari_api.posts(hostname=host)] == [202]


def test_endpoint_without_v1_is_a_failure_not_a_fake_success(tmp_path, masakari_api, host,
                                                            outbox):
    conf = make_conf(tmp_path, masakari_api.url)  # the pitfall: no /v1
    nid = outbox.put(vm(host), source="t", drivers=["masakari"]).id
    row = worker_for(conf, outbox).deliver_now(nid, 0.5)
    assert row["state"] == "pending"
    assert "notification_uuid" in row["deliveries"][0]["last_message"]
    assert masakari_api.notifications(hostname=host) == []


def test_max_age_moves_an_undeliverable_row_to_expired(tmp_path, outbox):
    conf = make_conf(tmp_path, "http://127.0.0.1:9/v1", max_age=1)
    nid = outbox.put(vm("h1"), source="t", drivers=["masakari"]).id
    row = worker_for(conf, outbox).deliver_now(nid, 10)
    assert row["state"] == "expired"


class Receiver(http.server.ThreadingHTTPServer):
    """A real HTTP endpoint for the webhook driver; answers with the codes it is given."""

    def __init__(self, codes):
        self.codes = list(codes)
        self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(h):
                body = h.rfile.read(int(h.headers["Content-Length"]))
                self.requests.append((dict(h.headers), body))
                code = self.codes.pop(0) if self.codes else 200
                h.send_response(code)
                h.end_headers()
                h.wfile.write(b"{}")

            def log_message(h, *a):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


@pytest.mark.parametrize("codes,state,attempts", [
    ([200], "delivered", 1),
    ([409], "delivered", 1),
    ([400], "rejected", 1),
    ([422], "rejected", 1),
    ([401, 200], "delivered", 2),
    ([403, 403, 201], "delivered", 3),
    ([500, 502, 503, 200], "delivered", 4),
    ([429, 200], "delivered", 2),
])
def test_webhook_answer_classes(tmp_path, outbox, codes, state, attempts):
    server = Receiver(codes)
    try:
        conf = make_conf(tmp_path, "http://127.0.0.1:9/v1")
        conf.set_override("url", server.url, group="webhook")
        conf.set_override("secret", "s3cret", group="webhook")
        nid = outbox.put(Notification.create(COMPUTE_HOST, "h1", {"event": "STOPPED"}),
                         source="t", drivers=["webhook"]).id
        row = worker_for(conf, outbox, ["webhook"]).deliver_now(nid, 20)
    finally:
        server.shutdown()
    assert row["state"] == state
    assert row["deliveries"][0]["attempts"] == attempts == len(server.requests)
    headers, body = server.requests[-1]
    assert headers[SIGNATURE_HEADER] == signature("s3cret", body)
    doc = json.loads(body)
    assert set(doc) == {"id", "event_type", "version", "generated_time", "payload"}
    assert doc["payload"]["payload"] == {"event": "STOPPED"}
    # the id is stable across retries, so a receiver can deduplicate
    assert len({json.loads(b)["id"] for _, b in server.requests}) == 1


def test_a_notification_routed_to_two_drivers_is_tracked_per_driver(tmp_path, masakari_api,
                                                                     host, outbox):
    server = Receiver([500, 200])
    try:
        conf = make_conf(tmp_path, masakari_api.endpoint)
        conf.set_override("url", server.url, group="webhook")
        nid = outbox.put(vm(host), source="t", drivers=["masakari", "webhook"]).id
        row = worker_for(conf, outbox, ["masakari", "webhook"]).deliver_now(nid, 20)
    finally:
        server.shutdown()
    assert row["state"] == "delivered"
    by_driver = {d["driver"]: d for d in row["deliveries"]}
    assert by_driver["masakari"]["attempts"] == 1 and by_driver["webhook"]["attempts"] == 2
    assert len(masakari_api.notifications(hostname=host)) == 1
    # the webhook's retry must not re-send to Masakari
    assert [p.status for p in masakari_api.posts(hostname=host)] == [202]
