"""make demo: a compute node with the three daemons, three failures, and what Masakari got.

The compute node is a network namespace (its management, tenant and storage links are veth
pairs); the rest of the cloud, with a real masakari-api, is a second namespace reached over
the management link. A private libvirtd serves test-driver domains and a stand-in plays
nova-compute. ha-instancemonitor, ha-processmonitor and ha-hostmonitor run as real
processes on the node from one config file. The demo then destroys a VM, crashes
nova-compute (its restart fails: STOPPED; repaired: STARTED), has the kernel's OOM killer
kill a qemu process (a real OOM kill in a memory-limited cgroup: a kernel-level fault only
the kernel log shows) and takes the storage link down, waits (bounded) for each notification to be stored by the API, and prints them as
the API stored them and as `ha-monitors history` tells it. Everything it started is
stopped at the end, also on Ctrl-C. Exit status 0 only if every notification arrived.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.lab import DAEMONS, Lab  # noqa: E402
from demo.show import Steps, api_table, history, matches, wait_stored  # noqa: E402
from tests.helpers import BIN  # noqa: E402

STOPPED_HOST = {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "NORMAL"}


def run(lab: Lab, steps: Steps) -> int:
    with steps("starting masakari-api in the cloud namespace, and the compute node's "
               "namespace with its links") as s:
        endpoint = lab.start_cloud()
        s.notes += [f"API at {endpoint}", f"compute node = netns {lab.topo.d.name}, "
                    f"cloud = netns {lab.topo.a.name}", f"work dir {lab.work}"]
    with steps(f"registering a segment and host {lab.hostname!r} in Masakari") as s:
        host_uuid = lab.register_host()
        s.notes.append(f"host uuid {host_uuid}")
    with steps("starting a private libvirtd with test-driver domain demo-vm-1") as s:
        vm, = lab.start_libvirtd("demo-vm-1")
        s.notes.append(lab.libvirtd.uri)
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
    oom_instance = str(uuid.uuid4())
    expected = [("VM", {"event": "LIFECYCLE", "instance_uuid": vm.UUIDString(),
                        "vir_domain_event": "STOPPED_DESTROYED"}, "instancemonitor"),
                ("PROCESS", {"event": "STOPPED", "process_name": "nova-compute"},
                 "processmonitor"),
                ("PROCESS", {"event": "STARTED", "process_name": "nova-compute"},
                 "processmonitor"),
                ("VM", {"event": "LIFECYCLE", "instance_uuid": oom_instance,
                        "vir_domain_event": "STOPPED_FAILED"}, "hostmonitor"),
                ("COMPUTE_HOST", STOPPED_HOST, "hostmonitor")]
    injections = [
        "VM failure: virsh destroy demo-vm-1",
        "nova-compute crash: SIGKILL; its restart command fails (2 attempts)",
        "nova-compute repaired by hand: the demo starts it again",
        f"kernel OOM killer: the qemu of instance {oom_instance} eats past its 48 MiB "
        "cgroup limit (hostmonitor reads it in /dev/kmsg)",
        f"storage link down: ip -n {lab.topo.d.name} link set brs down"]
    actions = [vm.destroy, lab.crash_nova_compute, lab.start_nova_compute,
               lambda: lab.oom_kill_qemu(oom_instance), lab.storage_link_down]
    for text, act, (type_, payload, daemon) in zip(injections, actions, expected):
        with steps(f"{text}; waiting for {type_} {payload['event']} in the API") as s:
            act()
            s.ok = wait_stored(lab, type_, payload, logs[daemon])

    stored = lab.api_notifications()
    print("\nNotifications as masakari-api stored them (GET /v1/notifications):")
    api_table(stored, lab.hostname, host_uuid)
    print("\nWhat the compute node recorded (ha-monitors history):")
    history(conf)
    missing = [f"{t} {p['event']}" for t, p, _ in expected
               if not any(matches(n, t, p) for n in stored)]
    if missing:
        print(f"\nFAILED: not stored by masakari-api: {', '.join(missing)}")
        return 1
    print(f"\nOK: all {len(expected)} expected notifications stored by masakari-api")
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
