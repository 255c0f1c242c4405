"""What the real masakari-engine 22 does with each kind of notification, posted raw.

These pin the engine's contract that the daemons' decisions rely on (and that
docs/recovery.md reports): which notifications it recovers, which it ignores, and
which Nova calls it makes.  The daemons' own scenarios are in the other modules.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone


def post(engine, host, type_, payload):
    body = {"notification": {"type": type_, "hostname": host,
                             "generated_time": datetime.now(timezone.utc).isoformat(),
                             "payload": payload}}
    status, answer = engine.api.post_notification(body)
    return status, answer


def test_vm_stopped_failed_restarts_the_instance_once(engine, nova, host):
    server = nova.add_server(host)
    other = nova.add_server(host)
    status, answer = post(engine, host, "VM", {"instance_uuid": server, "vir_domain_event":
                                               "STOPPED_FAILED", "event": "LIFECYCLE"})
    assert status == 202, answer
    done = engine.wait_final(answer["notification"]["notification_uuid"])
    assert done["status"] == "finished"
    assert nova.actions(host) == [(server, "os-stop", 202), (server, "os-start", 202)]
    assert nova.server(server)["OS-EXT-STS:vm_state"] == "active"
    assert nova.server(other)["OS-EXT-STS:vm_state"] == "active"
    assert nova.service_updates(host) == []


def test_host_normal_with_service_up_fails_and_leaves_service_disabled(engine, nova, host, peer):
    server = nova.add_server(host)
    status, answer = post(engine, host, "COMPUTE_HOST", {"event": "STOPPED", "cluster_status":
                                                         "OFFLINE", "host_status": "NORMAL"})
    assert status == 202, answer
    done = engine.wait_final(answer["notification"]["notification_uuid"])
    assert done["status"] == "failed"
    assert nova.evacuations() == [] or all(c.host != host for c in nova.evacuations())
    assert [c.status for c in nova.calls(host=host, action="evacuate")] and \
        {c.status for c in nova.calls(host=host, action="evacuate")} == {400}
    assert nova.service(host)["status"] == "disabled"
    assert nova.server(server)["OS-EXT-SRV-ATTR:host"] == host
    assert nova.mutations(peer) == []
