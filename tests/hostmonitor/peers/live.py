"""The live Pacemaker cluster's test harness, shared by test_pacemaker_live.py (3 full
members) and test_pacemaker_remote.py (full members + pacemaker_remote nodes) and the
benchmarks: one ha-hostmonitor per node (members and remotes), each run on its node (its
network and mount namespaces) and delivering over the management network to a real
masakari-api; what a test claims is read back from the API and the outboxes.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.fixtures.masakari_api import MasakariAPI, available
from tests.fixtures.pacemaker_cluster import PacemakerCluster
from tests.helpers import Daemon, wait_for, write_conf
from tests.hostmonitor.peers.helpers import outbox_rows, payloads

STOPPED_NORMAL = {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "NORMAL"}
STOPPED_UNKNOWN = {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "UNKNOWN"}
STARTED = {"event": "STARTED", "cluster_status": "ONLINE", "host_status": "NORMAL"}
# [hostmonitor_peers] reporter_grace (10 s by default). 3 s was exceeded under CI load by
# the DC's own reporting (crm_mon, notify, crm_attribute), so a standby queued duplicates
# (Masakari stored each event once; the test counts what was queued).
GRACE = 6
STONITH_WAIT = 8


class Live:
    """ha-hostmonitor on every node of ``cluster`` (members and remotes), counting what the
    API stored and what each outbox queued per test (``begin``)."""

    def __init__(self, cluster: PacemakerCluster, api: MasakariAPI, workdir: Path):
        self.cluster, self.api, self.workdir = cluster, api, workdir
        self.endpoint = cluster.expose(api.port) + "/v1"
        self.daemons: dict[str, Daemon] = {}
        self.confs: dict[str, Path] = {}
        self.run = 0
        self.driver: tuple | None = None
        self.opts: tuple[str, dict] = ("default", {})
        self.base: dict[str, int] = {}
        self.base_rows: dict[tuple[str, str], int] = {}

    def begin(self) -> None:
        """A test starts: what is stored and queued so far belongs to earlier tests."""
        self.base = {n: len(payloads(self.api, n)) for n in self.cluster.all_nodes}
        self.base_rows = self._rows()

    def _rows(self) -> dict[tuple[str, str], int]:
        """(queued by, about) → rows in the outboxes (one CLI call per node)."""
        out: dict[tuple[str, str], int] = {}
        for n, c in self.confs.items():
            for row in outbox_rows(c):
                key = (n, row["notification"]["hostname"])
                out[key] = out.get(key, 0) + 1
        return out

    def stored(self, node: str) -> list[dict]:
        """What the API stored about ``node`` during this test."""
        return payloads(self.api, node)[self.base.get(node, 0):]

    def use(self, driver: str, **host) -> None:
        """ha-hostmonitor with this monitoring_driver (and these [host] options) on every
        node (kept between tests)."""
        key = (driver, tuple(sorted(host.items())))
        if self.driver != key:
            self.stop_daemons()
            self.start_daemons(driver, **host)
            self.driver = key
        for n in self.cluster.all_nodes:
            if self.daemons[n].proc.poll() is not None:
                self.start_daemon(n)

    def start_daemons(self, driver: str = "default", **host) -> None:
        """A fresh ha-hostmonitor on every node (own state dirs), started side by side."""
        self.run += 1
        self.opts = (driver, host)
        for node in self.cluster.all_nodes:
            state = self.workdir / f"run{self.run}" / node
            state.mkdir(parents=True)
            state.chmod(0o755)
            self.confs[node] = self._write_conf(node, state)
            self.start_daemon(node, wait=False)
        for node, d in self.daemons.items():
            d.notify.wait_for("READY", timeout=60)

    def _write_conf(self, node: str, state: Path, extra: dict | None = None) -> Path:
        driver, host = self.opts
        sections = {"DEFAULT": {"state_group": "haclient"},
                    "host": {"monitoring_driver": driver, "monitoring_interval": 1,
                             "stonith_wait": STONITH_WAIT, **host},
                    "hostmonitor_peers": {"reporter_grace": GRACE, "command_timeout": 5},
                    # the same window as this module's masakari-api (1 s)
                    "delivery": {"duplicate_notification_detection_interval": 1}}
        for group, opts in (extra or {}).items():
            sections.setdefault(group, {}).update(opts)
        conf = write_conf(state / "hm.conf", hostname=node, state_path=state,
                          endpoint=self.endpoint, sections=sections)
        conf.chmod(0o644)
        return conf

    def reconfigure(self, node: str, extra: dict | None = None) -> None:
        """Restart ``node``'s ha-hostmonitor with ``extra`` sections over this run's
        configuration (same state directory and outbox); ``None`` restores it."""
        self._write_conf(node, self.confs[node].parent, extra)
        self.start_daemon(node)

    def start_daemon(self, node: str, wait: bool = True) -> None:
        old = self.daemons.pop(node, None)
        if old is not None:  # died with its node
            old.stop()
            old.notify.close()
        self.daemons[node] = Daemon("hostmonitor", self.confs[node],
                                    argv_prefix=self.cluster.nsenter(node)).start(wait)

    def stop_daemons(self) -> None:
        for d in self.daemons.values():
            if d.proc.poll() is None:
                d.proc.terminate()
        for d in self.daemons.values():
            d.stop()
            d.notify.close()
        self.daemons.clear()

    def queued(self, about: str) -> dict[str, int]:
        """Rows about ``about`` queued in each node's outbox during this test."""
        rows = self._rows()
        return {n: rows.get((n, about), 0) - self.base_rows.get((n, about), 0)
                for n in self.confs}

    def restart(self, node: str) -> None:
        self.cluster.restart(node)
        self.start_daemon(node)  # its daemon died with the node (fenced = power cut)

    def settle(self) -> None:
        """Long enough for a standby to report if it (wrongly) would."""
        time.sleep(GRACE + 2)  # grace + one poll + a crm_mon


def reset(live: Live) -> None:
    """Heal what a test broke; the daemons of nodes that were fenced start again."""
    c = live.cluster
    c.fail_fencing(False)
    c.heal()
    for n in c.all_nodes:
        if not c.stack_running(n):
            c.restart(n)
    c.wait_state(online=c.all_nodes, timeout=60, what="cluster healed")
    for n, d in list(live.daemons.items()):
        if d.proc.poll() is not None:
            live.start_daemon(n)
    # A node reported down and back now gets its STARTED: let it land here, not inside the
    # next test (whose begin() would otherwise count it as that test's first report).
    for n in c.all_nodes:
        wait_for(lambda n=n: (payloads(live.api, n) or [{}])[-1].get("event") != "STOPPED",
                 60, what=f"{n}: STARTED after the heal")


def victim(live: Live) -> str:
    dc = live.cluster.dc()
    return next(n for n in live.cluster.nodes if n != dc)


def using(live: Live, driver: str = "default", **host):
    """The body of a per-test fixture (``yield from using(live, ...)``): every node's
    ha-hostmonitor with this driver and these [host] options, counts from here, healed
    after."""
    live.use(driver, **host)
    live.begin()
    yield live
    reset(live)


@contextlib.contextmanager
def live_cluster(api_dir: Path, prefix: str, **cluster):
    """A started masakari-api (duplicate window 1 s: a test counts reports, a duplicate must
    be stored, not answered 409) and a started PacemakerCluster(**cluster) whose nodes are
    Masakari hosts; yields the Live harness, removes everything after."""
    if not available():
        pytest.fail("masakari-api is not installed (set MASAKARI_VENV)")
    # not under pytest's 0700 tmp: user hacluster (the alert agent) must reach these paths
    workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-"))
    workdir.chmod(0o755)
    api = MasakariAPI(api_dir, duplicate_interval=1)
    c = PacemakerCluster(workdir / "cluster", **cluster)
    env = None
    try:
        api.start()
        c.start()
        env = Live(c, api, workdir)
        for n in c.all_nodes:
            api.ensure_host(n)
        yield env
    finally:
        if env is not None:
            env.stop_daemons()
        c.stop()
        api.stop()
        if not os.environ.get("PCMK_LIVE_KEEP"):  # set it to read the nodes' logs after
            shutil.rmtree(workdir, ignore_errors=True)
