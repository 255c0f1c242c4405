"""One compute node of an end-to-end scenario: stand-in nova-compute / libvirtd
processes, the real ha-processmonitor and ha-hostmonitor (real processes, one shared
outbox, as on a real node), delivering to the real masakari-api + masakari-engine.

The stand-in services are tests/processmonitor/bin/fake-nova-compute copied as
``<node>/bin/nova-compute`` and ``<node>/bin/libvirtd``: their process name is what
hostmonitor's default ``compute_processes`` look for, and their command line (the node's
own path + a tag) is unique to the node, so processmonitor watches only these.
"""
from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import yaml

from tests.helpers import Daemon, cli, wait_for, write_conf

HERE = Path(__file__).parent
STANDIN = HERE.parent / "processmonitor" / "bin" / "fake-nova-compute"
RESTART = HERE / "bin" / "restart"
FENCER = HERE / "bin" / "fake-fencer"
SERVICES = ("nova-compute", "libvirtd")
_links = itertools.count(1)


class Node:
    def __init__(self, engine, workdir: Path, hostname: str):
        self.engine = engine
        self.dir = workdir
        self.hostname = hostname
        self.state = workdir / "state"
        self.state.mkdir(parents=True, exist_ok=True)
        self.bin = workdir / "bin"
        self.bin.mkdir(exist_ok=True)
        self.tag = uuid.uuid4().hex[:8]
        for name in SERVICES:
            shutil.copy(STANDIN, self.bin / name)
        self.storage = workdir / "storage"
        self.storage.mkdir(exist_ok=True)
        self.daemons: list[Daemon] = []
        self.links: list[str] = []

    # -- stand-in services ---------------------------------------------------------------
    def argv(self, service: str) -> list[str]:
        return [str(self.bin / service), self.tag]

    def process_name(self, service: str) -> str:
        return " ".join(self.argv(service))

    def start_service(self, service: str) -> None:
        subprocess.Popen(["setsid", *self.argv(service)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.pids(service), 10, what=f"{service} running")

    def pids(self, service: str) -> list[int]:
        want = self.process_name(service).encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    line = f.read().replace(b"\0", b" ")
                with open(f"/proc/{entry}/stat", "rb") as f:
                    st = f.read().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if want in line and st != b"Z" and not line.startswith(b"setsid"):
                found.append(int(entry))
        return found

    def kill(self, service: str, sig: int = signal.SIGKILL) -> list[int]:
        pids = self.pids(service)
        for pid in pids:
            os.kill(pid, sig)
        return pids

    # -- links (a veth pair in this namespace, unique names) -----------------------------
    def veth(self) -> str:
        """A veth pair; returns the node-side name (its peer is NAME + 'p')."""
        name = f"ee{os.getpid() % 100000}{next(_links)}"
        subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"],
                       check=True, capture_output=True)
        self.links.append(name)
        for n in (name, name + "p"):
            subprocess.run(["ip", "link", "set", n, "up"], check=True, capture_output=True)
        return name

    def carrier(self, name: str, state: str) -> None:
        """Carrier loss/return on ``name``: its peer end goes down/up."""
        subprocess.run(["ip", "link", "set", name + "p", state], check=True, capture_output=True)

    # -- daemons -------------------------------------------------------------------------
    def conf(self, name: str, sections: dict) -> Path:
        return write_conf(self.dir / f"{name}.conf", hostname=self.hostname,
                          state_path=self.state, endpoint=self.engine.api.endpoint,
                          sections=sections)

    def processmonitor(self, fails: int = 0, delay: float = 0.0, retries: int = 3,
                       interval: int = 1, **processmonitor) -> Daemon:
        """ha-processmonitor watching both stand-ins; nova-compute's restart command fails
        ``fails`` times, then takes ``delay`` seconds."""
        self.restart_log = self.dir / "restarts"
        entries = [{"process_name": self.process_name(s), "notify_name": s,
                    "restart_command": " ".join([str(RESTART), str(self.restart_log),
                                                 str(fails if s == "nova-compute" else 0),
                                                 str(delay), *self.argv(s)])}
                   for s in SERVICES]
        plist = self.dir / "process_list.yaml"
        plist.write_text(yaml.safe_dump(entries, sort_keys=False))
        conf = self.conf("processmonitor", {
            "process": {"process_list_path": plist, "check_interval": 2,
                        "restart_retries": retries, "restart_interval": interval},
            "processmonitor": {"command_timeout": 30, "restart_grace": 1, **processmonitor}})
        return self._start("processmonitor", conf)

    def hostmonitor(self, host=None, peers=None, env=None, **hostmonitor) -> Daemon:
        """ha-hostmonitor watching this node's storage directory (always up unless a test
        removes it) and the compute processes; [hostmonitor] options as given, the rest
        defaults. ``peers`` = [hostmonitor_peers] options (the peer source runs only with
        them: [host] monitoring_driver = none otherwise)."""
        opts = {"storage_paths": self.storage, "storage_check_interval": 0.5,
                "storage_check_timeout": 2, "evaluation_interval": 0.5, **hostmonitor}
        sections = {"hostmonitor": opts,
                    "host": {"monitoring_driver": "default" if peers else "none",
                             **(host or {})}}
        if peers:
            sections["hostmonitor_peers"] = peers
        conf = self.conf("hostmonitor", sections)
        return self._start("hostmonitor", conf, env=env)

    def _start(self, name: str, conf: Path, env: dict | None = None) -> Daemon:
        daemon = Daemon(name, conf, env=env).start()
        self.daemons.append(daemon)
        return daemon

    def history(self, *args: str) -> str:
        conf = next(iter(self.dir.glob("*.conf")))
        r = cli(conf, "history", *args)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def outbox(self) -> str:
        conf = next(iter(self.dir.glob("*.conf")))
        r = cli(conf, "outbox", "list")
        return r.stdout + r.stderr

    def stop(self) -> None:
        for daemon in self.daemons:
            daemon.stop()
            daemon.notify.close()
        self.daemons = []
        for service in SERVICES:
            for pid in self.pids(service):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        for name in self.links:
            subprocess.run(["ip", "link", "del", name], capture_output=True)
        self.links = []


def settle(seconds: float) -> None:
    """Let daemons and the engine act (or not): the scenarios assert an absence."""
    time.sleep(seconds)
