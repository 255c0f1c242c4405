"""The message-bus driver against a real RabbitMQ (tests/fixtures/rabbitmq.py) and a real
oslo.messaging notification listener, as Vitrage or Aodh would consume the events."""
import queue
import uuid

import pytest

oslo_messaging = pytest.importorskip("oslo_messaging")

from oslo_config import cfg  # noqa: E402

from hostmonitor import payloads  # noqa: E402
from monitors import config, drivers  # noqa: E402
from monitors.delivery import DeliveryWorker  # noqa: E402
from monitors.notification import VM, Notification  # noqa: E402
from monitors.history import ReadModel
from monitors.outbox import Outbox  # noqa: E402
from tests.fixtures.masakari_api import free_port  # noqa: E402


def make_conf(tmp_path, url, topic):
    conf = config.new_conf()
    conf([], project="x", default_config_files=[])
    conf.set_override("state_path", str(tmp_path / "state"))
    conf.set_override("hostname", "cmp-bus")
    conf.set_override("transport_url", url, group="messaging")
    conf.set_override("topics", [topic], group="messaging")
    conf.set_override("drivers", ["messaging"], group="delivery")
    conf.set_override("retry_initial_interval", 0.05, group="delivery")
    conf.set_override("retry_max_interval", 0.2, group="delivery")
    return conf


class Collector:
    def __init__(self):
        self.got = queue.Queue()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self.got.put(("INFO", publisher_id, event_type, payload, metadata))

    def warn(self, ctxt, publisher_id, event_type, payload, metadata):
        self.got.put(("WARN", publisher_id, event_type, payload, metadata))


@pytest.fixture
def listener(rabbitmq):
    """A real oslo.messaging notification listener on a topic unique to the test."""
    topic = f"cha_{uuid.uuid4().hex[:8]}"
    lconf = cfg.ConfigOpts()
    lconf(args=[], default_config_files=[], default_config_dirs=[])
    transport = oslo_messaging.get_notification_transport(lconf, url=rabbitmq.transport_url)
    collector = Collector()
    server = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=topic)], [collector], executor="threading")
    collector.topic = topic
    collector.start = server.start
    yield collector
    try:
        server.stop()
        server.wait()
    finally:
        transport.cleanup()


def test_every_detection_reaches_a_real_listener_as_a_versioned_notification(
        tmp_path, rabbitmq, listener):
    conf = make_conf(tmp_path, rabbitmq.transport_url, listener.topic)
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    worker = DeliveryWorker(conf, box, drivers.load(conf, ["messaging"]))
    host = payloads.stopped("cmp-bus", fenced=True)
    vm = Notification.create(VM, "cmp-bus", {"event": "LIFECYCLE", "vir_domain_event":
                                             "STOPPED_FAILED",
                                             "instance_uuid": str(uuid.uuid4())})
    rows = [ReadModel(box).get(worker.deliver_now(box.put(n, source="t", drivers=["messaging"]).id,
                                       20)["id"]) for n in (host, vm)]
    assert [r["state"] for r in rows] == ["delivered", "delivered"]
    # Sent before anyone listened: the broker kept them in the topic's queue.
    listener.start()
    got = [listener.got.get(timeout=20) for _ in range(2)]
    by_type = {g[2]: g for g in got}
    prio, publisher, event_type, payload, metadata = by_type["compute_ha.compute_host.stopped"]
    assert (prio, publisher) == ("WARN", "compute-ha-monitors.cmp-bus")
    assert payload["compute_ha_object.name"] == "DetectionPayload"
    assert payload["compute_ha_object.version"] == "1.0"
    assert payload["compute_ha_object.data"] == host.to_dict()
    assert metadata["message_id"] == rows[0]["deliveries"][0]["remote_id"]
    assert by_type["compute_ha.vm.lifecycle"][3]["compute_ha_object.data"] == vm.to_dict()
    assert by_type["compute_ha.vm.lifecycle"][0] == "INFO"
    history = [h["kind"] for h in rows[0]["history"]]
    assert history == ["detected", "attempt", "answer"]
    worker.stop(2)
    box.close()


def test_an_unreachable_bus_keeps_the_notification_pending(tmp_path):
    conf = make_conf(tmp_path, f"rabbit://guest:guest@127.0.0.1:{free_port()}/", "t")
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    worker = DeliveryWorker(conf, box, drivers.load(conf, ["messaging"]))
    nid = box.put(payloads.stopped("cmp-bus", fenced=False), source="t",
                  drivers=["messaging"]).id
    row = worker.deliver_now(nid, 3)
    assert row["state"] == "pending"
    assert "message bus" in row["deliveries"][0]["last_message"]
    assert row["deliveries"][0]["attempts"] >= 1
    worker.stop(2)
    box.close()


def test_the_driver_names_its_missing_transport(tmp_path):
    conf = make_conf(tmp_path, "rabbit://x", "t")
    conf.clear_override("transport_url", group="messaging")
    assert "[messaging] transport_url: required because [delivery] drivers names " \
           "messaging" in config.problems(conf)
