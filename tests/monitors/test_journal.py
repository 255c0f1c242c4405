"""Journal fields of the delivery worker, asserted through a real private journald
(tests/fixtures/journald.py) and queried by field the way an operator does:
journalctl INSTANCE_UUID=..."""
import uuid

from monitors.notification import VM, Notification
from monitors.outbox import Outbox
from tests.fixtures.journald import journald  # noqa: F401 - the fixture
from tests.helpers import deliverer, wait_for, write_conf


def test_delivery_lines_carry_journal_fields(tmp_path, masakari_api, host, journald):  # noqa: F811
    instance = str(uuid.uuid4())
    conf = write_conf(tmp_path / "m.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint=masakari_api.endpoint,
                      sections={"DEFAULT": {"use_journal": "true"}})
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    nid = box.put(Notification.create(VM, host, {"event": "LIFECYCLE", "instance_uuid": instance,
                                                 "vir_domain_event": "STOPPED_FAILED"}),
                  source="test", drivers=["masakari"]).id
    with deliverer(conf, argv_prefix=journald.prefix()):
        delivered = wait_for(lambda: [e for e in journald.query(INSTANCE_UUID=instance)
                                      if e.get("DELIVERY_STATE") == "delivered"], 30,
                             what="a delivered entry for the instance in the journal")
    e = delivered[0]
    assert e["NOTIFICATION_ID"] == str(nid)
    assert e["NOTIFICATION_TYPE"] == "VM" and e["HOSTNAME"] == host
    assert e["EVENT"] == "LIFECYCLE" and e["SYSLOG_IDENTIFIER"] == "ha-delivery"
    stored = masakari_api.notifications(hostname=host)
    assert stored[0]["notification_uuid"] in e["MESSAGE"]
