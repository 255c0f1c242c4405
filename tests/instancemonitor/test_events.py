"""Domain events on a real libvirtd (test driver) → VM notifications stored by the real
masakari-api, sent by ha-instancemonitor running as its own process."""
from __future__ import annotations

import datetime as dt

from tests.helpers import wait_for
from tests.instancemonitor.conftest import vm_events, vm_sent


def test_destroy_shutdown_suspend_stored_by_api(libvirtd, make_daemon, masakari_api, host):
    a, b, c = (libvirtd.create(f"inst-{i}") for i in range(3))
    daemon = make_daemon(host)
    before = dt.datetime.utcnow()
    a.destroy()
    b.shutdown()
    c.suspend()  # SUSPENDED_PAUSED: not in the table, never sent
    expected = {("LIFECYCLE", a.UUIDString(), "STOPPED_DESTROYED"),
                ("LIFECYCLE", b.UUIDString(), "STOPPED_SHUTDOWN")}
    wait_for(lambda: set(vm_events(masakari_api, host)) >= expected, 15,
             what="destroy and shutdown stored by the API")
    stored = masakari_api.notifications(type="VM", hostname=host)
    assert len(stored) == 2, stored
    assert sorted(vm_sent(masakari_api, host)) == sorted((*e, 202) for e in expected)  # once
    for n in stored:
        assert set(n["payload"]) == {"event", "instance_uuid", "vir_domain_event"}
        generated = dt.datetime.fromisoformat(n["generated_time"].replace("Z", ""))
        assert abs((generated - before).total_seconds()) < 5
    assert "SUSPENDED_PAUSED" in daemon.log_text()  # seen, logged at debug, not sent
