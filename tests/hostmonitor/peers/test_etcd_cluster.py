"""The etcd peer driver: a real 3-member etcd cluster (Debian etcd-server) in network
namespaces, one hostmonitor per namespace talking to its local member, a real masakari-api
in the root namespace reached over the bridge. Results read back from the API."""
from __future__ import annotations

import itertools
import json
import os
import threading
import time

from pathlib import Path

import etcd3gw
import pytest

from tests.fixtures.etcd_cluster import EtcdCluster
from tests.fixtures.masakari_api import MasakariAPI, available
from tests.helpers import wait_for, write_conf
from tests.hostmonitor.peers.helpers import PeerDaemon, outbox_rows, payloads, sent

TTL = 2
STOPPED = {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "UNKNOWN"}
STARTED = {"event": "STARTED", "cluster_status": "ONLINE", "host_status": "NORMAL"}
FENCED = {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "NORMAL"}
RECORDER = Path(__file__).parents[1] / "bin" / "record-fence"
_runs = itertools.count(1)


class Env:
    def __init__(self, cluster: EtcdCluster, api: MasakariAPI):
        self.cluster, self.api = cluster, api
        self.endpoint = f"http://{cluster.bridge_ip}:{api.port}/v1"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not available():
        pytest.fail("masakari-api is not installed (set MASAKARI_VENV)")
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"))
    cluster.start()
    # its own API, listening on every address so the namespaces reach it over the bridge
    api = MasakariAPI(tmp_path_factory.mktemp("api-etcd"), listen="0.0.0.0")
    try:
        api.start()
        yield Env(cluster, api)
    finally:
        api.stop()
        cluster.stop()


class Peers:
    """One hostmonitor (etcd driver) per namespace, with this test's own key prefix."""

    def __init__(self, env: Env, tmp_path, **peer_opts):
        run = f"{os.getpid()}-{next(_runs)}"
        self.env = env
        self.prefix = f"/test/{run}"
        self.names = [f"etcd-{run}-h{i}" for i in range(env.cluster.size)]
        self.daemons: list[PeerDaemon] = []
        self.confs = []
        for i, name in enumerate(self.names):
            env.api.ensure_host(name)
            state = tmp_path / name
            state.mkdir()
            conf = write_conf(state / "hm.conf", hostname=name, state_path=state,
                              endpoint=env.endpoint, sections={
                                  "host": {"monitoring_driver": "etcd"},
                                  "hostmonitor_peers": {
                                      "etcd_networks": "management:http://127.0.0.1:2379",
                                      "etcd_prefix": self.prefix, "etcd_lease_ttl": TTL,
                                      "etcd_timeout": 1, **peer_opts}})
            self.confs.append(conf)
            self.daemons.append(PeerDaemon(conf, netns=env.cluster.namespaces[i]))
        self.client = etcd3gw.Etcd3Client(host=env.cluster.addresses[0], port=2379,
                                          timeout=3, api_path="/v3/")

    def start(self):
        for d in self.daemons:
            d.start()
        wait_for(lambda: len(self.client.get_prefix(self.prefix + "/alive/")) == len(
            self.names) and self.reporter() is not None, 15, what="all alive, one reporter")
        return self

    def reporter(self) -> int | None:
        try:
            value = self.client.get(self.prefix + "/reporter")
        except Exception:  # noqa: BLE001 - the queried member may be the isolated one
            return None
        return self.names.index(value[0].decode().rsplit(":", 1)[0]) if value else None

    def stop(self):
        for d in self.daemons:
            d.stop()
            d.notify.close()


@pytest.fixture
def peers(env, tmp_path):
    made = []

    def make(**opts):
        p = Peers(env, tmp_path, **opts)
        made.append(p)
        return p.start()
    yield make
    for p in made:
        p.stop()
    for i in range(env.cluster.size):
        env.cluster.heal(i)
    env.cluster.wait_healthy(15)


def test_isolated_host_is_reported_once_and_reports_nobody_then_started(env, peers):
    p = peers()
    reporter = p.reporter()
    victim = next(i for i in range(3) if i != reporter)
    t0 = time.monotonic()
    env.cluster.isolate(victim)
    name = p.names[victim]
    wait_for(lambda: payloads(env.api, name), 2 * TTL + 8, what="STOPPED stored")
    detection = time.monotonic() - t0
    time.sleep(TTL + 1)  # the other members and the isolated one had time to add more
    assert sent(env.api, name) == [(STOPPED, 202)], "exactly one report sent"
    others = [n for i, n in enumerate(p.names) if i != victim]
    assert all(sent(env.api, n) == [] for n in others)
    # the isolated host queued nothing about anybody (it reports nobody)
    assert outbox_rows(p.confs[victim]) == []
    # TTL + margin; when the isolated member was the etcd leader, etcd re-grants every lease
    # its full TTL on the new leader's election (~1.3 s here), hence 2 TTL + margin.
    assert detection < 2 * TTL + 4, f"detected after {detection:.1f}s (TTL {TTL}s)"
    env.cluster.heal(victim)
    wait_for(lambda: len(payloads(env.api, name)) == 2, 20, what="STARTED stored")
    assert payloads(env.api, name) == [STOPPED, STARTED]
    assert sent(env.api, name) == [(STOPPED, 202), (STARTED, 202)]


def test_reporter_killed_during_a_failure_still_one_report(env, peers):
    p = peers(mass_failure_fraction=0.7)
    reporter = p.reporter()
    victim = next(i for i in range(3) if i != reporter)
    env.cluster.isolate(victim)
    p.daemons[reporter].kill()  # dies before the victim's lease has even expired
    name = p.names[victim]
    wait_for(lambda: payloads(env.api, name), 2 * TTL + 8, what="STOPPED from the new reporter")
    time.sleep(TTL)
    assert sent(env.api, name) == [(STOPPED, 202)]
    survivor = 3 - reporter - victim
    assert p.reporter() in (survivor, None)
    # the dead reporter's host is itself reported, once, by the survivor
    wait_for(lambda: payloads(env.api, p.names[reporter]), 2 * TTL + 6, what="reporter down")
    assert sent(env.api, p.names[reporter]) == [(STOPPED, 202)]


class SimulatedMembers:
    """Hosts simulated by the test itself: a registration key and a lease-backed alive key
    refreshed every TTL/4, exactly what a hostmonitor writes (etcd sees no difference)."""

    def __init__(self, client, prefix: str, names: list[str]):
        self.client, self.prefix, self.names = client, prefix, names
        self.leases = {}
        for name in names:
            lease = client.lease(TTL)
            client.put(f"{prefix}/hosts/{name}", "{}")
            client.put(f"{prefix}/alive/management/{name}", "{}", lease)
            self.leases[name] = lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, daemon=True)
        self._thread.start()

    def _refresh(self):
        while not self._stop.wait(TTL / 4):
            for lease in list(self.leases.values()):
                try:
                    lease.refresh()
                except Exception:  # noqa: BLE001
                    pass

    def fail(self, names):
        for name in names:
            self.leases.pop(name).revoke()

    def close(self):
        self._stop.set()
        self._thread.join()
        for name in self.names:
            self.client.delete(f"{self.prefix}/hosts/{name}")
            self.client.delete(f"{self.prefix}/alive/management/{name}")


def test_mass_failure_is_an_operator_alert_not_an_evacuation(env, peers):
    """Three real hostmonitors plus 10 simulated members."""
    p = peers(mass_failure_fraction=0.5)
    sims = [f"{p.names[0]}-sim{i}" for i in range(10)]
    for name in sims:
        env.api.ensure_host(name)
    members = SimulatedMembers(p.client, p.prefix, sims)
    try:
        time.sleep(0.5)
        # 13 hosts: 2 down is a failure (reported), 7 down is a mass failure (not reported)
        members.fail(sims[:2])
        for name in sims[:2]:
            wait_for(lambda n=name: payloads(env.api, n), TTL + 6, what=f"{name} reported")
        members.fail(sims[2:7])
        wait_for(lambda: p.client.get(p.prefix + "/mass-failure"), TTL + 6,
                 what="mass failure key")
        time.sleep(TTL)
        assert all(sent(env.api, n) == [] for n in sims[2:7])
        assert "MASS FAILURE" in "".join(d.log_text() for d in p.daemons)
        assert all(sent(env.api, n) == [] for n in sims[7:] + p.names)
        assert all(sent(env.api, n) == [(STOPPED, 202)] for n in sims[:2])
    finally:
        members.close()


DEADLINE = 4


def test_dead_peer_is_normal_only_after_its_self_fence_deadline(env, peers):
    """etcd_self_fence_deadline: a host whose keys expired has fenced itself by then (the
    documented assumption); before it nothing is reported, after it NORMAL (evacuate)."""
    p = peers(etcd_self_fence_deadline=DEADLINE)
    reporter = p.reporter()
    victim = next(i for i in range(3) if i != reporter)
    name = p.names[victim]
    t0 = time.monotonic()
    p.daemons[victim].kill()  # the host died: its lease is no longer refreshed
    # keys expired after TTL; the deadline has not passed: nothing, certainly no NORMAL
    time.sleep(TTL + DEADLINE - 1.5)
    assert payloads(env.api, name) == []
    wait_for(lambda: payloads(env.api, name), DEADLINE + TTL + 8, what="NORMAL stored")
    assert time.monotonic() - t0 >= DEADLINE + 1
    time.sleep(1)
    assert sent(env.api, name) == [(FENCED, 202)]
    rows = [r for c in p.confs for r in outbox_rows(c, name)]
    assert len(rows) == 1 and rows[0]["decision"]["fencing"].startswith("self-fenced: keys "
                                                                          "expired")


def test_unfit_host_self_fences_then_peers_say_normal(env, peers, tmp_path):
    """fencing = etcd on the host that judges itself unfit (its storage path is gone):
    it asks for its self-fence (the recorder stands in for the reboot: it records the
    request and SIGKILLs the hostmonitor — no softdog on this kernel), never says NORMAL
    itself; the reporter says NORMAL once its keys expired and the deadline passed."""
    p = Peers(env, tmp_path, etcd_self_fence_deadline=DEADLINE)
    victim = 2
    name = p.names[victim]
    storage = tmp_path / f"storage-{name}"
    storage.mkdir()
    record = tmp_path / "self-fence.jsonl"
    with open(p.confs[victim], "a") as f:
        f.write(f"\n[hostmonitor]\nstorage_paths = {storage}\nstorage_check_interval = 0.5\n"
                f"compute_processes =\nhold_down = 0\nfencing = etcd\n"
                f"self_fence_command = {RECORDER} {record} reboot\n"
                "[host]\nmonitoring_samples = 1\n")
    p.daemons[victim].env["RECORD_FENCE_KILL_PARENT"] = "1"
    try:
        p.start()
        assert payloads(env.api, name) == []
        storage.rmdir()  # the storage the VMs depend on is gone: unfit
        wait_for(lambda: record.exists() and record.read_text(), 15, what="self-fence")
        fenced_at = time.monotonic()
        assert [json.loads(x) for x in record.read_text().splitlines()] == [["reboot"]]
        wait_for(lambda: FENCED in payloads(env.api, name), DEADLINE + TTL + 10,
                 what="NORMAL from the reporter")
        assert time.monotonic() - fenced_at >= DEADLINE
        got = payloads(env.api, name)
        # the host's own UNKNOWN may or may not have left before the fence: never NORMAL
        assert got.count(FENCED) == 1 and got[-1] == FENCED
        assert all(x["host_status"] == "UNKNOWN" for x in got[:-1])
        # and the NORMAL was POSTed once (a re-send would be a 409 that got[] cannot show)
        assert [status for payload, status in sent(env.api, name)
                if payload == FENCED] == [202]
        own = outbox_rows(p.confs[victim], name)
        assert [r["notification"]["payload"]["host_status"] for r in own] == ["UNKNOWN"]
    finally:
        p.stop()


def test_isolated_host_stops_feeding_its_watchdog_before_the_peers_say_normal(env, peers,
                                                                            tmp_path):
    """[hostmonitor_peers] watchdog_device: the isolated host's hostmonitor keeps running
    (its own links look up: a partition upstream) but stops feeding its watchdog once its
    lease went unrefreshed for watchdog_lease_bound (= TTL); the peers say NORMAL only after
    the deadline, and by then it has stopped (a real device resets the host
    watchdog_timeout after the last pet). The others keep feeding. No watchdog device on
    this machine (no softdog): each daemon opens a regular file by path as it would open
    /dev/watchdog, and every pet lands in it as a byte."""
    p = Peers(env, tmp_path, etcd_self_fence_deadline=DEADLINE)  # 1 + TTL 2 <= 4
    devices = [tmp_path / f"watchdog-{n}" for n in p.names]
    for conf, dev in zip(p.confs, devices):
        dev.write_bytes(b"")
        with open(conf, "a") as f:
            f.write(f"\n[hostmonitor_peers]\nwatchdog_device = {dev}\nwatchdog_timeout = 1\n")
    try:
        p.start()
        wait_for(lambda: all(d.stat().st_size >= 3 for d in devices), 10, what="fed")
        reporter = p.reporter()
        victim = next(i for i in range(3) if i != reporter)
        name, daemon = p.names[victim], p.daemons[victim]
        stopped = "stopped feeding it (lost its peers: its etcd leases on every network"
        assert stopped not in daemon.log_text()  # never while it holds its lease
        env.cluster.isolate(victim)
        wait_for(lambda: stopped in daemon.log_text(), 2 * TTL + 8, what="feeding stopped")
        pets_at_stop = devices[victim].read_bytes()
        assert FENCED not in payloads(env.api, name)  # the peers have not said NORMAL yet
        others = [d.stat().st_size for i, d in enumerate(devices) if i != victim]
        wait_for(lambda: FENCED in payloads(env.api, name), DEADLINE + 2 * TTL + 10,
                 what="NORMAL from the reporter")
        # not one pet after the decision, and the peers' NORMAL came after it
        assert devices[victim].read_bytes() == pets_at_stop and set(pets_at_stop) == {0}
        assert all(d.stat().st_size > n for d, n in zip(
            (d for i, d in enumerate(devices) if i != victim), others)), "others still fed"
        assert sent(env.api, name) == [(FENCED, 202)]
        assert all(sent(env.api, n) == [] for i, n in enumerate(p.names) if i != victim)
    finally:
        p.stop()
    # a clean stop leaves every watchdog armed (no magic close): watchdog_disarm_on_stop
    assert all(b"V" not in d.read_bytes() for d in devices)


def test_stalled_reporter_loop_stops_the_watchdog_while_the_lease_is_held(env, tmp_path):
    """The daemon's evaluation stops making progress (the reporter's look hangs, e.g. an
    outbox write that never returns, while the keep-alive thread still refreshes the lease
    and so keeps the election key): the feeding stops once the reconcile loop's bound
    passed, though the lease rule alone would keep feeding. The EtcdSource runs in this
    process against the real cluster, its look replaced by one that hangs."""
    from hostmonitor import opts as hm_opts
    from hostmonitor.peers.etcd_source import EtcdSource
    from monitors import config

    dev = tmp_path / "watchdog"
    dev.write_bytes(b"")
    run = f"{os.getpid()}-{next(_runs)}"
    path = write_conf(tmp_path / "hm.conf", hostname=f"etcd-{run}-solo", state_path=tmp_path,
                      endpoint=None, sections={
                          "host": {"monitoring_driver": "etcd"},
                          "hostmonitor_peers": {
                              "etcd_networks": f"management:{env.cluster.client_url(0)}",
                              "etcd_prefix": f"/test/{run}", "etcd_lease_ttl": TTL,
                              "etcd_timeout": 1, "etcd_self_fence_deadline": DEADLINE,
                              "watchdog_device": dev, "watchdog_timeout": 1}})
    conf = config.new_conf()
    config.register_opts(conf)
    hm_opts.register_opts(conf)
    conf(["--config-file", str(path)], project="test", default_config_files=[])
    src = EtcdSource(conf, emit=None)  # alone in its prefix: nobody to report
    hang, release = threading.Event(), threading.Event()
    src.start()
    try:
        wait_for(lambda: src.reporter and dev.stat().st_size >= 3, 10, what="reporter, fed")
        # longer than the reconcile loop's bound (TTL + lease bound TTL) at 0.25 s a tick
        ticks = src.feeder.ticks
        wait_for(lambda: src.feeder.ticks >= ticks + 4 * 2 * TTL + 4, 20, what="ticks")
        assert src.feeder.stopped_feeding is None and src.health().ok

        def stuck():
            hang.set()
            release.wait(60)
        src._reconcile = stuck
        src._kick.set()
        wait_for(hang.is_set, 10, what="the look hangs")
        wait_for(lambda: src.feeder.stopped_feeding, 4 * TTL + 5, what="feeding stopped")
        assert src.feeder.stopped_feeding.startswith("loop etcd-reconcile made no progress")
        assert src.watchdog_verdict() is None  # the lease is held: only the stall stops it
        pets = dev.read_bytes()
        ticks = src.feeder.ticks
        wait_for(lambda: src.feeder.ticks >= ticks + 4, 10, what="ticks after the stop")
        assert dev.read_bytes() == pets
        health = src.health()
        assert not health.ok and "watchdog NOT fed (loop etcd-reconcile" in health.detail
    finally:
        release.set()
        src.stop()
    assert b"V" not in dev.read_bytes()  # due to reset: never disarmed
