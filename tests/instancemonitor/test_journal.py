"""`journalctl INSTANCE_UUID=...` answers "what happened to this VM": ha-instancemonitor
runs under a real private journald (tests/fixtures/journald.py) against a real libvirtd
(test driver) and the real masakari-api; a domain is destroyed and the journal, queried
by field, tells detection and delivery under one NOTIFICATION_ID; an ignored domain's
entry says why nothing was sent."""
from __future__ import annotations

from tests.fixtures.journald import journald  # noqa: F401 - the fixture
from tests.helpers import wait_for

JOURNAL = {"DEFAULT": {"use_journal": "true"}}


def test_destroyed_domain_story_in_the_journal(journald, libvirtd, make_daemon,  # noqa: F811
                                               masakari_api, host):
    reported, skipped = libvirtd.create("inst-j"), libvirtd.create("skip-j")
    uuid, skipped_uuid = reported.UUIDString(), skipped.UUIDString()
    daemon = make_daemon(host, start=False, sections=JOURNAL, ignore_domains="^skip-")
    daemon.argv_prefix = journald.prefix()
    daemon.start()
    reported.destroy()
    skipped.destroy()

    entries = journald.wait_delivered(INSTANCE_UUID=uuid)
    detected = [e for e in entries if e.get("DELIVERY_STATE") == "pending"]
    delivered = [e for e in entries if e.get("DELIVERY_STATE") == "delivered"]
    assert len(detected) == 1 and len(delivered) == 1, journald.messages(INSTANCE_UUID=uuid)
    d, v = detected[0], delivered[0]
    assert entries.index(d) < entries.index(v)
    assert d["NOTIFICATION_ID"] == v["NOTIFICATION_ID"]
    assert d["NOTIFICATION_TYPE"] == "VM" and d["EVENT"] == "LIFECYCLE"
    assert d["HOSTNAME"] == host and d["SOURCE"] == "instancemonitor/libvirt"
    assert "STOPPED_DESTROYED" in d["MESSAGE"]
    assert {d["SYSLOG_IDENTIFIER"], v["SYSLOG_IDENTIFIER"]} == {"ha-instancemonitor"}
    stored = masakari_api.notifications(type="VM", hostname=host)
    assert [n["payload"]["instance_uuid"] for n in stored] == [uuid]
    assert stored[0]["notification_uuid"] in v["MESSAGE"]

    # the decision not to send is one entry of its own, found the same way
    ignored = wait_for(lambda: journald.query(INSTANCE_UUID=skipped_uuid), 10,
                       what="the ignored domain's entry")
    assert [(e["DECISION"], e["VIR_DOMAIN_EVENT"], e["EVENT"]) for e in ignored] == \
        [("ignored", "STOPPED_DESTROYED", "LIFECYCLE")], ignored
    assert "ignore_domains '^skip-'" in ignored[0]["MESSAGE"]
    assert "NOTIFICATION_ID" not in ignored[0]
