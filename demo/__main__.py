"""make demo: a compute node with the three daemons, failures, and what Masakari *did*.

The compute node is a network namespace (its management, tenant and storage links are veth
pairs); the rest of the cloud is a second namespace reached over the management link, with
a real masakari-api and masakari-engine (over a private RabbitMQ) and a recording Nova
stand-in (no real Nova in the demo). A private libvirtd serves test-driver domains and a
stand-in plays nova-compute. ha-instancemonitor, ha-processmonitor and ha-hostmonitor run
as real processes on the node from one config file; the hostmonitor also watches its
Pacemaker peers (a CIB file read by the real crm_mon, a fencing-history stand-in). The demo
takes the storage link down (a verdict withheld for safety: UNKNOWN, nothing evacuated),
destroys a VM, has the kernel's OOM killer kill a qemu process (a real OOM kill in a
memory-limited cgroup, a fault only the kernel log shows: the instance restarted), crashes
nova-compute (its restart fails: STOPPED, service disabled;
repaired: STARTED, held while the host is on maintenance), and fences a peer (NORMAL: its
instances evacuated). For each it waits (bounded) for the API and the engine, and prints
the engine's status and Nova calls beside the notification, then `ha-monitors history`.
Everything it started is stopped at the end, also on Ctrl-C. Exit status 0 only if every
notification and engine outcome is as expected.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.lab import DAEMONS, Lab  # noqa: E402
from demo.show import (Steps, api_table, engine_actions, history, wait_final,  # noqa: E402
                       wait_held, wait_stored)
from tests.helpers import BIN  # noqa: E402

# The node's own verdict: never host_status NORMAL (no fencing here, so Masakari records
# it and evacuates nothing; only peers that confirmed a fencing say NORMAL).
STOPPED_HOST = {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "UNKNOWN"}


def run(lab: Lab, steps: Steps) -> int:
    with steps("starting the cloud namespace: RabbitMQ, masakari-api, masakari-engine and the "
               "recording Nova stand-in; the compute node's namespace with its links") as s:
        endpoint = lab.start_cloud()
        s.notes += [f"API at {endpoint}", f"compute node = netns {lab.topo.d.name}, "
                    f"cloud = netns {lab.topo.a.name}", f"work dir {lab.work}"]
    with steps(f"registering a segment and hosts {lab.hostname!r}, {lab.peer!r}, "
               f"{lab.spare!r} in Masakari, Nova and the Pacemaker CIB") as s:
        names = lab.register_host()
        host_uuid = next(u for u, n in names.items() if n == lab.hostname)
        s.notes.append(f"host uuid {host_uuid}")
    with steps("starting a private libvirtd with test-driver domain demo-vm-1") as s:
        vm, = lab.start_libvirtd("demo-vm-1")
        peer_vms = lab.add_instances(vm)
        s.notes.append(f"{lab.libvirtd.uri}; Nova: demo-vm-1 on {lab.hostname}, "
                       f"{len(peer_vms)} instances on {lab.peer}")
    with steps("starting the nova-compute stand-in") as s:
        s.notes.append(f"process_name {lab.start_nova_compute()!r}")
    with steps("writing one config file for the three daemons; ha-monitors check-config") as s:
        conf = lab.write_config(endpoint)
        check = subprocess.run(lab.on_node([str(BIN / "ha-monitors"), "--config-file",
                                            str(conf), "check-config"]),
                               capture_output=True, text=True, timeout=60)
        if check.returncode != 0:
            raise RuntimeError(f"check-config refused {conf}:\n{check.stdout}{check.stderr}")
        s.notes.append(str(conf))
    for name in DAEMONS:
        with steps(f"starting ha-{name} on the compute node") as s:
            d = lab.start_daemon(name)
            s.notes.append(f"pid {d.proc.pid}, log {d.log.name}")

    logs = {name: d.log for name, d in lab.daemons.items()}
    # (what is done, the notification expected, the daemon, its host, the engine's
    #  expected status and what it does in Nova; None = held by the outbox, not stored)
    oom_instance = str(uuid.uuid4())
    lab.nova.add_server(lab.hostname, server_id=oom_instance, name="demo-vm-oom")
    cases = [
        (f"storage link down: ip -n {lab.topo.d.name} link set brs down",
         lab.storage_link_down, "COMPUTE_HOST", STOPPED_HOST, "hostmonitor", lab.hostname,
         "ignored", "no Nova call",
         "verdict withheld for safety: this host is not fenced, so it says UNKNOWN; "
         "Masakari records it and evacuates nothing"),
        ("VM failure: virsh destroy demo-vm-1", vm.destroy, "VM",
         {"event": "LIFECYCLE", "instance_uuid": vm.UUIDString(),
          "vir_domain_event": "STOPPED_DESTROYED"}, "instancemonitor", lab.hostname,
         "ignored", "no Nova call", "a destroyed VM is not a failure Masakari recovers"),
        (f"kernel OOM killer: the qemu of instance {oom_instance} eats past its 48 MiB "
         "cgroup limit (hostmonitor reads it in /dev/kmsg)",
         lambda: lab.oom_kill_qemu(oom_instance), "VM",
         {"event": "LIFECYCLE", "instance_uuid": oom_instance,
          "vir_domain_event": "STOPPED_FAILED"}, "hostmonitor", lab.hostname,
         "finished", "1 instance restarted",
         "a kernel-level fault only /dev/kmsg shows: the engine restarts the instance"),
        ("nova-compute crash: SIGKILL; its restart command fails (2 attempts)",
         lab.crash_nova_compute, "PROCESS", {"event": "STOPPED", "process_name": "nova-compute"},
         "processmonitor", lab.hostname, "finished",
         "compute service disabled ('Masakari detected process failed.')",
         "the host is now on maintenance in Masakari"),
        ("nova-compute repaired by hand: the demo starts it again", lab.start_nova_compute,
         "PROCESS", {"event": "STARTED", "process_name": "nova-compute"}, "processmonitor",
         lab.hostname, None, "no Nova call",
         "held in the outbox: the API answers 409 'host is already under maintenance'; "
         "Masakari re-enables nothing"),
        (f"peer {lab.peer} dies and the cluster fences it (CIB offline, fencing history)",
         lab.peer_fenced, "COMPUTE_HOST", {"event": "STOPPED", "cluster_status": "OFFLINE",
                                           "host_status": "NORMAL"},
         "hostmonitor", lab.peer, "finished",
         f"compute service disabled ('Masakari detected host failed.'), "
         f"{len(peer_vms)} instances evacuated",
         "fencing confirmed: the one path that says NORMAL"),
    ]
    outcomes, ok = [], True
    for text, act, type_, payload, daemon, host, want_status, want_nova, why in cases:
        with steps(f"{text}; waiting for {type_} {payload['event']} and masakari-engine") as s:
            since = time.time()
            act()
            if want_status is None:
                s.ok = wait_held(conf, type_, payload, logs[daemon])
                status = "held (409, maintenance)" if s.ok else "?"
            else:
                s.ok = wait_stored(lab, type_, payload, logs[daemon], host=host)
                row = wait_final(lab, type_, payload, host) if s.ok else None
                status = row["status"] if row else "not final"
                s.ok = s.ok and status == want_status
            time.sleep(0.5)
            did = engine_actions(lab.nova, host, since)
            s.ok = s.ok and did == want_nova
            s.notes.append(f"{status}: {did}")
            ok = ok and s.ok
            outcomes.append((type_, host, payload, status, did, why))

    stored = []
    for host in (lab.hostname, lab.peer):
        stored += lab.topo.a.run(lab.topo.api.notifications, hostname=host)
    print("\nNotifications as masakari-api stored them (GET /v1/notifications; status = "
          "masakari-engine's verdict):")
    api_table(stored, names)
    print("\nWhat masakari-engine did with each (Nova calls, from the recording Nova "
          "stand-in):")
    for type_, host, payload, status, did, why in outcomes:
        event = "/".join(str(payload[k]) for k in ("event", "vir_domain_event", "process_name",
                                                   "host_status") if k in payload)
        print(f"   {type_:<12} {host:<10} {event:<32} {status:<24} {did}")
        print(f"   {'':<12} {'':<10} {'':<32} -> {why}")
    print("\nWhat the compute node recorded (ha-monitors history):")
    history(conf)
    if not ok:
        print("\nFAILED: an expected notification or engine outcome is missing (see above)")
        return 1
    print(f"\nOK: all {len(cases)} notifications and masakari-engine's actions as expected")
    return 0


def main() -> int:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` cleans up
    steps = Steps()
    lab = Lab()
    try:
        return run(lab, steps)
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - reported, then everything is cleaned up
        print(f"\ndemo failed: {exc}", flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with steps("cleaning up: daemons, stand-in, libvirtd, masakari-api, namespaces, "
                   "work dir"):
            lab.close()


if __name__ == "__main__":
    sys.exit(main())
