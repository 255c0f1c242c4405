"""The demo's compute node and cloud, built from the test fixtures (one way to run each real
component): network namespace D is the compute node (management, tenant and storage links
are veth pairs), namespace A is the rest of the cloud with a real masakari-api and
masakari-engine (over a private RabbitMQ) and the recording Nova stand-in (the demo
starts no real Nova), and a private libvirtd serves test-driver domains. compute-2 and compute-3 are peers
that exist only in Masakari, Nova and a Pacemaker CIB file (the real crm_mon reads it); a
stonith_admin stand-in answers the fencing history. Everything started here is stopped by
`close()`, which is safe to call at any point of a half-built lab."""
from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path

from tests.engine.node import FENCER
from tests.fixtures.cib import Cib
from tests.fixtures.hm_topology import Topology
from tests.fixtures.libvirtd import Libvirtd
from tests.helpers import Daemon, write_conf
from tests.hostmonitor import kernel_faults
# Standins is the processmonitor tests' stand-in service (a python process that runs until
# killed, with a tag in its command line); it lives in that package's conftest.
from tests.processmonitor.conftest import BIN as STANDIN_BIN
from tests.processmonitor.conftest import Standins

NOVA = "fake-nova-compute"
DAEMONS = ("instancemonitor", "processmonitor", "hostmonitor")


class Lab:
    def __init__(self, hostname: str = "compute-1"):
        self.hostname = hostname
        self.work = Path(tempfile.mkdtemp(prefix="ha-monitors-demo-"))
        self.topo: Topology | None = None
        self.libvirtd: Libvirtd | None = None
        self.standins = Standins()
        self.daemons: dict[str, Daemon] = {}
        self.conf = self.work / "monitors.conf"
        self.peer, self.spare = "compute-2", "compute-3"
        self.cib = Cib(self.work / "cib.xml")
        self.fencer_state = self.work / "fencer"
        self.cleanups = contextlib.ExitStack()  # kernel-level faults (cgroups)

    # -- the cloud -----------------------------------------------------------------------
    def start_cloud(self) -> str:
        """Namespaces, veth links and masakari-api in A; returns the endpoint seen from D."""
        self.topo = Topology(self.work / "masakari", engine=True)
        return self.topo.endpoint

    @property
    def nova(self):
        return self.topo.engine.nova

    def register_host(self) -> dict[str, str]:
        """A segment and the three hosts in Masakari (and Nova), as an operator does before
        enabling HA; the cluster (CIB) sees all three online. Returns uuid -> name."""
        uuids = {self.topo.a.run(self.topo.api.ensure_host, h): h
                 for h in (self.hostname, self.peer, self.spare)}
        self.cib.write({h: True for h in (self.hostname, self.peer, self.spare)})
        return uuids

    def add_instances(self, vm) -> list[str]:
        """Nova's view: demo-vm-1 on this node, two instances on the peer."""
        self.nova.add_server(self.hostname, server_id=vm.UUIDString(), name="demo-vm-1")
        return [self.nova.add_server(self.peer, name=f"peer-vm-{i}") for i in (1, 2)]

    def api_notifications(self) -> list[dict]:
        """GET /v1/notifications (all pages, oldest first) as the API stored them."""
        return self.topo.a.run(self.topo.api.notifications, hostname=self.hostname)

    # -- what runs on the compute node -----------------------------------------------------
    def start_libvirtd(self, *domains: str) -> list:
        self.libvirtd = Libvirtd(self.work / "libvirtd")
        self.libvirtd.workdir.mkdir()
        self.libvirtd.start()
        return [self.libvirtd.create(name) for name in domains]

    def start_nova_compute(self) -> str:
        """The nova-compute stand-in; returns the process_name that matches it."""
        self.standins.start(NOVA)
        return self.standins.name(NOVA)

    def write_config(self, endpoint: str) -> Path:
        """One file for the three daemons, as on a real compute node."""
        plist = self.work / "process_list.yaml"
        # The restart command always fails (the stand-in's "package is broken"), so the
        # processmonitor gives up and reports STOPPED; the demo then repairs it by hand.
        plist.write_text(f"- process_name: '{self.standins.name(NOVA)}'\n"
                         f"  notify_name: nova-compute\n"
                         f"  restart_retries: 1\n  restart_interval: 0.2\n"
                         f"  restart_command: {STANDIN_BIN / 'fail'} {self.work / 'restarts'}"
                         f" nova-compute\n")
        state = self.work / "state"
        state.mkdir()
        return write_conf(self.conf, hostname=self.hostname, state_path=state,
                          endpoint=endpoint, sections={
                              "libvirt": {"connection_uri": self.libvirtd.uri},
                              "process": {"process_list_path": plist, "check_interval": 1},
                              "processmonitor": {"command_timeout": 5, "restart_grace": 1},
                              "hostmonitor": {
                                  "management_interfaces": "m0",
                                  "tenant_interfaces": "t0,t1",
                                  "storage_interfaces": "brs",
                                  # nova-compute is processmonitor's job here; otherwise its
                                  # crash would also be a "compute down" row of the matrix.
                                  "compute_processes": "",
                                  # undamped so the demo is short (defaults: 30 s, 3)
                                  "hold_down": 0,
                                  "evaluation_interval": 1},
                              # Peers through Pacemaker (CIB file + fencing-history stand-in)
                              "host": {"monitoring_samples": 1, "monitoring_driver": "default",
                                       "monitoring_interval": 1, "stonith_wait": 2},
                              "hostmonitor_peers": {"stonith_admin_command": FENCER,
                                                    "command_timeout": 5}})

    def on_node(self, argv: list[str]) -> list[str]:
        """argv run inside the compute node's namespace."""
        return [*self.topo.d.prefix(), *argv]

    def start_daemon(self, name: str) -> Daemon:
        """ha-<name> from .venv/bin inside namespace D; returns once it said READY."""
        (self.work / "logs").mkdir(exist_ok=True)
        env = ({**self.cib.env, "FAKE_FENCER_STATE": str(self.fencer_state)}
               if name == "hostmonitor" else None)
        d = Daemon(name, self.conf, log=self.work / "logs" / f"{name}.log",
                   argv_prefix=self.topo.d.prefix(), env=env)
        self.daemons[name] = d
        return d.start()

    # -- failures ------------------------------------------------------------------------
    def crash_nova_compute(self) -> list[int]:
        return self.standins.kill(NOVA)

    def oom_kill_qemu(self, instance: str) -> None:
        """A real OOM kill: a 'qemu' of ``instance`` (the interpreter named
        qemu-system-x86_64, with -uuid on its command line as libvirt starts qemu) in a
        cgroup v1 memory child limited to 48 MiB eats past its limit; the kernel kills it."""
        cgroup = self.cleanups.enter_context(kernel_faults.memory_cgroup(48))
        proc, _ = kernel_faults.start_qemu(self.work, cgroup, instance)
        time.sleep(2.5)  # a VM runs a while (> kernel_qemu_scan_interval, 2 s) before it
        kernel_faults.oom(proc)  # grows past its limit

    def storage_link_down(self) -> None:
        self.topo.admin("brs", "down")

    def peer_fenced(self) -> None:
        """compute-2 dies and the cluster fences it: the fencer's history has it, Pacemaker
        shows it offline, Nova stops hearing its nova-compute."""
        with open(self.fencer_state, "a") as f:
            f.write(f"fenced {self.peer} {time.time()}\n")
        self.nova.set_service(self.peer, state="down")
        self.cib.write({self.hostname: True, self.peer: False, self.spare: True})

    # -- cleanup -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop daemons, stand-ins, libvirtd, the API; delete the namespaces and temp dir."""
        for d in self.daemons.values():
            try:
                d.stop()
            finally:
                d.notify.close()
                shutil.rmtree(d.notify.dir, ignore_errors=True)
        self.standins.cleanup()
        self.cleanups.close()
        if self.libvirtd is not None:
            self.libvirtd.stop()
        if self.topo is not None:
            self.topo.close()
        shutil.rmtree(self.work, ignore_errors=True)
