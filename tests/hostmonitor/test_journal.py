"""`journalctl HOSTNAME=<host>` answers "what happened to this node": ha-hostmonitor runs in
the namespace topology under a real private journald (tests/fixtures/journald.py); both
tenant links go down, and the journal tells the role changes, the matrix decision, the
queued COMPUTE_HOST STOPPED and its delivery to the real masakari-api under one
NOTIFICATION_ID."""
from __future__ import annotations

from tests.fixtures.journald import journald  # noqa: F401 - the fixture
from tests.hostmonitor.test_links import STOPPED, start, wait_payloads


def test_link_down_story_in_the_journal(journald, links_up, tmp_path):  # noqa: F811
    topo = links_up
    host = topo.new_host()
    d = start(topo, tmp_path, host, sections={"DEFAULT": {"use_journal": "true"}},
              argv_prefix=journald.prefix())
    try:
        topo.admin("t0", "down")
        topo.admin("t1", "down")
        wait_payloads(topo, host, [STOPPED])
        entries = journald.wait_delivered(HOSTNAME=host)
    finally:
        d.stop()
    tenant = [e["ROLE_STATE"] for e in entries if e.get("ROLE") == "tenant"]
    assert tenant[-1] == "down", journald.messages(HOSTNAME=host)
    detected = [e for e in entries if e.get("DELIVERY_STATE") == "pending"]
    decided = [e for e in entries if e.get("ACTION") == "report_host_failure"]
    delivered = [e for e in entries if e.get("DELIVERY_STATE") == "delivered"]
    assert len(detected) == len(decided) == len(delivered) == 1, \
        journald.messages(HOSTNAME=host)
    nid = detected[0]["NOTIFICATION_ID"]
    assert decided[0]["NOTIFICATION_ID"] == delivered[0]["NOTIFICATION_ID"] == nid
    assert decided[0]["RULE"].startswith("built-in")
    for e in detected + decided + delivered:
        assert (e["NOTIFICATION_TYPE"], e["EVENT"], e["PEER_HOST"]) == \
            ("COMPUTE_HOST", "STOPPED", host)
    went_down = entries.index(next(e for e in entries if e.get("ROLE_STATE") == "down"))
    # (the decision line follows the queueing, so it may race the delivery: not ordered)
    assert went_down < entries.index(detected[0]) < entries.index(delivered[0])
    assert {e["SYSLOG_IDENTIFIER"] for e in entries} == {"ha-hostmonitor"}
    stored = topo.notifications(host)
    assert stored[0]["notification_uuid"] in delivered[0]["MESSAGE"]
