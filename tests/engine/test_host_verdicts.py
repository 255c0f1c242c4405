"""ha-hostmonitor's verdicts through the real masakari-engine: what the engine did with
them (notification status in the API) and what it asked Nova (the recording stand-in).

Only a fenced host is ever evacuated: this host's own verdict goes out as host_status
UNKNOWN (ignored by the engine) and asks for fencing when fencing is configured; the peers
report NORMAL once the fencing is confirmed, and only then does the engine disable the
service and evacuate, once.
"""
from __future__ import annotations

import shutil

from tests.engine.node import FENCER, settle
from tests.fixtures.cib import Cib
from tests.helpers import wait_for

UNDAMPED = {"hold_down": 0}
HOST_UNDAMPED = {"monitoring_samples": 1}


def normal_stopped(rows):
    return [r for r in rows if r["type"] == "COMPUTE_HOST"
            and r["payload"].get("event") == "STOPPED"
            and r["payload"].get("host_status") == "NORMAL"]


def wait_host_rows(engine, host, count, timeout=30):
    return wait_for(lambda: (lambda rows: rows if len(rows) >= count else None)(
        engine.api.notifications(type="COMPUTE_HOST", hostname=host)), timeout, interval=0.3,
        what=f"{count} COMPUTE_HOST notification(s) of {host} stored")


def test_hostmonitor_started_before_the_compute_services(engine, nova, node, record):
    """Boot order / package upgrade: hostmonitor runs before nova-compute and libvirtd.
    Processes never seen running since start are not a failure, even undamped."""
    n = node()
    server = nova.add_server(n.hostname)
    hm = n.hostmonitor(host=HOST_UNDAMPED, **UNDAMPED)
    settle(3)  # six evaluations with no compute process at all
    for s in ("nova-compute", "libvirtd"):
        n.start_service(s)
    settle(2)
    rows = record(engine, n.hostname, note="hostmonitor up before nova-compute/libvirtd")
    assert rows[0]["notifications"] == []
    assert nova.mutations(n.hostname) == []
    assert nova.server(server)["OS-EXT-SRV-ATTR:host"] == n.hostname
    assert "report_host_failure" not in hm.log_text()


def test_link_blip_during_an_api_outage_recovers_nothing(engine, nova, node, record):
    """The tenant link drops and comes back while the API is down; the queued verdict
    reaches the engine afterwards. Undamped on purpose (the worst case): whatever is
    delivered, no compute service is disabled and nothing is evacuated."""
    n = node()
    tenant = n.veth()
    server = nova.add_server(n.hostname)
    hm = n.hostmonitor(host=HOST_UNDAMPED, tenant_interfaces=tenant, **UNDAMPED)
    settle(1.5)
    engine.api.kill()
    try:
        n.carrier(tenant, "down")
        wait_for(lambda: "report_host_failure" in hm.log_text(), 15, what="verdict queued")
        settle(1)
        n.carrier(tenant, "up")
        wait_for(lambda: "recovery" in hm.log_text().split("report_host_failure", 1)[1], 15,
                 what="link back, STARTED queued")
    finally:
        engine.api.start()
    settle(4)  # the backlog drains (retry interval <= 0.5 s), the engine handles it
    rows = engine.api.notifications(hostname=n.hostname)
    for row in rows:
        engine.wait_final(row["notification_uuid"], timeout=30)
    rec = record(engine, n.hostname, note="tenant link blip during API outage, undamped")[0]
    assert normal_stopped(engine.api.notifications(hostname=n.hostname)) == []
    assert {status for _, _, status in rec["notifications"]} <= {"ignored", "finished"}
    assert nova.mutations(n.hostname) == []
    assert nova.server(server)["OS-EXT-SRV-ATTR:host"] == n.hostname


def test_storage_loss_without_fencing_is_recorded_and_recovers_nothing(
        engine, nova, node, record):
    """No fencing configured: the verdict goes out as STOPPED/OFFLINE/UNKNOWN; Masakari
    records it (ignored) and nobody evacuates a host that may still run its VMs."""
    n = node()
    servers = [nova.add_server(n.hostname) for _ in range(2)]
    hm = n.hostmonitor(host=HOST_UNDAMPED, hold_down=1)
    settle(1.5)
    shutil.rmtree(n.storage)  # the mount the VMs live on is gone
    rows = wait_host_rows(engine, n.hostname, 1)
    done = engine.wait_final(rows[0]["notification_uuid"])
    settle(2)
    rec = record(engine, n.hostname, note="storage loss, [hostmonitor] fencing = none")[0]
    assert done["payload"] == {"event": "STOPPED", "cluster_status": "OFFLINE",
                               "host_status": "UNKNOWN"}
    assert done["status"] == "ignored"
    assert len(rec["notifications"]) == 1
    assert nova.mutations(n.hostname) == []
    assert {nova.server(s)["OS-EXT-SRV-ATTR:host"] for s in servers} == {n.hostname}
    assert "report_host_failure" in hm.log_text()


def test_storage_loss_with_fencing_then_the_fenced_host_is_evacuated_once(
        engine, nova, node, record, tmp_path):
    """[hostmonitor] fencing = pacemaker: the unfit host asks the cluster to fence it and
    still says only UNKNOWN. Once it is fenced (powered off: its daemons gone, offline in
    the CIB, Nova sees its service down), the peer reports it with host_status NORMAL and
    the engine disables its service and evacuates every instance exactly once."""
    h, p = node("unfit"), node("peer")
    fence_state = tmp_path / "fencer"
    fencer = str(FENCER)
    env = {"FAKE_FENCER_STATE": str(fence_state)}
    cib = Cib(tmp_path / "cib.xml")
    cib.write({h.hostname: True, p.hostname: True})
    servers = [nova.add_server(h.hostname, ha_enabled=True),
               nova.add_server(h.hostname, ha_enabled=False)]
    bystander = nova.add_server(p.hostname)
    p.hostmonitor(peers={"stonith_admin_command": fencer, "command_timeout": 5},
                  host={"monitoring_interval": 1, "monitoring_samples": 1, "stonith_wait": 2},
                  env={**cib.env, **env})
    hm = h.hostmonitor(host={**HOST_UNDAMPED, "monitoring_driver": "none"}, hold_down=1,
                       fencing="pacemaker", peers={"stonith_admin_command": fencer}, env=env)
    settle(1.5)
    shutil.rmtree(h.storage)
    wait_for(lambda: fence_state.exists() and f"fenced {h.hostname}" in fence_state.read_text(),
             30, interval=0.3, what="fencing requested")
    own = wait_host_rows(engine, h.hostname, 1)
    assert own[0]["payload"]["host_status"] == "UNKNOWN"
    assert engine.wait_final(own[0]["notification_uuid"])["status"] == "ignored"
    assert nova.mutations(h.hostname) == []  # asking for fencing evacuates nothing yet
    # the fence took effect: the host is off
    assert "fence" in hm.log_text()
    h.stop()
    nova.set_service(h.hostname, state="down")
    cib.write({h.hostname: False, p.hostname: True})
    rows = wait_host_rows(engine, h.hostname, 2, timeout=40)
    normal = normal_stopped(rows)
    assert len(normal) == 1
    done = engine.wait_final(normal[0]["notification_uuid"], timeout=60)
    settle(3)
    rec = record(engine, h.hostname, p.hostname,
                 note="storage loss with fencing = pacemaker; peer confirms, reports NORMAL")
    assert done["status"] == "finished"
    assert nova.service(h.hostname)["status"] == "disabled"
    evacuated = [c.server for c in nova.evacuations(h.hostname)]
    assert sorted(evacuated) == sorted(servers)  # every instance (HA_Enabled or not), once
    for s in servers:
        where = nova.server(s)["OS-EXT-SRV-ATTR:host"]
        assert where != h.hostname
        assert nova.service(where)["status"] == "enabled"
    # the healthy peer is untouched: service as it was, its own instance never acted on
    # (the engine unlocks the evacuated instances after they arrived there: not the peer's)
    assert nova.service_updates(p.hostname) == []
    assert nova.evacuations(p.hostname, ok_only=False) == []
    assert [a for a in nova.actions() if a[0] == bystander] == []
    assert nova.server(bystander)["OS-EXT-SRV-ATTR:host"] == p.hostname
    # POSTed once (the API would drop an identical re-send with 409: count what was sent)
    sent = [p for p in engine.api.posts(hostname=h.hostname, type="COMPUTE_HOST")
            if p.payload.get("event") == "STOPPED" and p.payload.get("host_status") == "NORMAL"]
    assert [p.status for p in sent] == [202], sent
    assert rec[1]["notifications"] == []
