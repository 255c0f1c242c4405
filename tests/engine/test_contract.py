"""What the real masakari-engine 22 does with each kind of notification, posted raw.

These pin the engine's contract that the daemons' decisions rely on (and that
docs/recovery.md reports): which notifications it recovers, which it ignores, and
which Nova calls it makes.  The daemons' own scenarios are in the other modules.
"""
from __future__ import annotations

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


# Every notification the daemons can send (instancemonitor's default table + the guest
# agent rule, processmonitor, hostmonitor), and what masakari-engine 22 does with it.
RECOVERED = "finished"
VM_EVENTS = [
    ("LIFECYCLE", "STOPPED_FAILED", RECOVERED),
    ("IO_ERROR", "IO_ERROR_REPORT", RECOVERED),
    ("QEMU_GUEST_AGENT_ERROR", "STOPPED_FAILED", RECOVERED),
    *[("LIFECYCLE", name, "ignored") for name in (
        "STOPPED_SHUTDOWN", "STOPPED_DESTROYED", "SHUTDOWN_FINISHED", "SUSPENDED_IOERROR",
        "SUSPENDED_WATCHDOG", "SUSPENDED_API_ERROR", "STOPPED_CRASHED", "CRASHED_PANICKED",
        "CRASHED_CRASHLOADED")],
    ("IO_ERROR", "IO_ERROR_NONE", "ignored"),
    ("IO_ERROR", "IO_ERROR_PAUSE", "ignored"),
    ("WATCHDOG", "WATCHDOG_RESET", "ignored"),
    ("WATCHDOG", "WATCHDOG_POWEROFF", "ignored"),
    ("REBOOT", "UNKNOWN", "ignored"),
    ("IO_ERROR_REASON", "UNKNOWN", "ignored"),
    ("CONTROL_ERROR", "UNKNOWN", "ignored"),
]


def test_every_vm_event_the_daemons_send(engine, nova, host, record):
    """One server per event on one host: only the three events the engine recovers stop
    and start their instance (once); every other one is ignored. Posted one after the
    other (the engine's SQLite answers "database is locked" under a burst: a property of
    this test set-up, not of a production database)."""
    posted, finals = [], []
    for event, name, _ in VM_EVENTS:
        server = nova.add_server(host)
        status, answer = post(engine, host, "VM", {"instance_uuid": server, "event": event,
                                                   "vir_domain_event": name})
        assert status == 202, answer
        posted.append((server, answer["notification"]["notification_uuid"]))
        finals.append(engine.wait_final(posted[-1][1])["status"])
    record(engine, host, note="every VM event, raw")
    assert finals == [expected for _, _, expected in VM_EVENTS]
    restarted = [server for (server, _), (_, _, exp) in zip(posted, VM_EVENTS)
                 if exp == RECOVERED]
    assert sorted(nova.actions(host)) == sorted(
        [(s, "os-stop", 202) for s in restarted] + [(s, "os-start", 202) for s in restarted])
    assert nova.service_updates(host) == []


def test_process_and_host_notifications(engine, nova, record):
    """PROCESS and COMPUTE_HOST, each on a fresh host with an instance (and a healthy peer
    somewhere): the engine's status and Nova calls, and the API's answer to what follows a
    handled STOPPED (the host is then on maintenance)."""
    from tests.engine.conftest import new_host

    new_host(engine, "spare")  # somewhere to evacuate to
    cases = [
        ("PROCESS", {"event": "STOPPED", "process_name": "nova-compute"}, "finished",
         ["disabled"]),
        ("PROCESS", {"event": "STOPPED", "process_name": "libvirtd"}, "finished", []),
        ("PROCESS", {"event": "STARTED", "process_name": "nova-compute"}, "finished", []),
        ("COMPUTE_HOST", {"event": "STOPPED", "cluster_status": "OFFLINE",
                          "host_status": "UNKNOWN"}, "ignored", []),
        ("COMPUTE_HOST", {"event": "STARTED", "cluster_status": "ONLINE",
                          "host_status": "NORMAL"}, "finished", []),
        ("COMPUTE_HOST", {"event": "STARTED", "cluster_status": "ONLINE",
                          "host_status": "UNKNOWN"}, "ignored", []),
    ]
    hosts, uuids = [], []
    for type_, payload, _, _ in cases:
        h = new_host(engine, "ct")
        nova.add_server(h)
        status, answer = post(engine, h, type_, payload)
        assert status == 202, answer
        hosts.append(h)
        uuids.append(answer["notification"]["notification_uuid"])
        engine.wait_final(uuids[-1])  # one at a time: see above
    got = [engine.wait_final(u)["status"] for u in uuids]
    record(engine, *hosts, note="PROCESS / COMPUTE_HOST, raw")
    for (type_, payload, expected, calls), h, status in zip(cases, hosts, got):
        assert status == expected, (type_, payload)
        assert [c.body.get("status") for c in nova.mutations(h)] == calls, (type_, payload)
    # after a handled PROCESS STOPPED the host is on maintenance: 409 for what follows,
    # even after a libvirtd STOPPED that changed nothing in Nova
    for h, name in ((hosts[0], "nova-compute"), (hosts[1], "libvirtd")):
        status, answer = post(engine, h, "PROCESS", {"event": "STARTED", "process_name": name})
        assert status == 409 and "maintenance" in str(answer), (h, status, answer)
    assert nova.service(hosts[0])["status"] == "disabled"  # nobody re-enables it
