"""The etcd driver's watchdog rule (etcd_decision.lease_lost) and its deadline check.

The rule in the etcd decision's terms: this host stops feeding its watchdog once its leases
on every network have gone unrefreshed for longer than watchdog_lease_bound (counted from
when the last successful refresh was *sent*: the lease lives at least that + TTL in etcd),
and never while it holds one. Driven with an injected clock through the real Feeder and a
device double that records pets (no watchdog device on this machine: no softdog). The same
with a real etcd cluster and the real daemon: test_etcd_cluster.py.
"""
from __future__ import annotations

import pytest

from hostmonitor import opts as hm_opts
from hostmonitor.peers import opts
from hostmonitor.peers.etcd_decision import lease_lost
from monitors import config, watchdog
from tests.helpers import cli, write_conf

TTL = 10
BOUND = 10.0


class Clock:
    t = 1000.0

    def __call__(self):
        return self.t


def feeder_on(refreshed, started, clock, bound=BOUND):
    pets = []
    device = watchdog.Device("/unused")
    device.pet = lambda: pets.append(clock.t)
    return watchdog.Feeder(device, lambda: lease_lost(refreshed, started, clock(), bound),
                           interval=2.5, clock=clock), pets


def test_never_stops_feeding_while_the_host_holds_its_lease():
    clock = Clock()
    refreshed = {"management": None}
    feeder, pets = feeder_on(refreshed, clock.t, clock)
    for i in range(400):  # 1000 s of keep-alives every TTL/3, with ticks in between
        clock.t += TTL / 3
        if i % 7 == 3:  # a refresh that failed (etcd slow, a leader election): skipped
            assert feeder.tick() is None
            continue
        refreshed["management"] = clock.t - 0.5  # sent half a second before it answered
        assert feeder.tick() is None
    assert len(pets) == 400 and feeder.stopped_feeding is None


def test_stops_exactly_when_the_bound_passes_after_losing_the_lease():
    clock = Clock()
    refreshed = {"management": clock.t}
    feeder, pets = feeder_on(refreshed, clock.t - 100, clock)
    last_sent = clock.t
    # isolated from here on: no refresh succeeds any more
    for step in (2.5, 5.0, 7.5, BOUND):  # up to exactly the bound: still fed
        clock.t = last_sent + step
        assert feeder.tick() is None
    clock.t = last_sent + BOUND + 0.001
    why = feeder.tick()
    assert why == ("lost its peers: its etcd leases on every network, not refreshed for "
                   "10.0s (> watchdog_lease_bound 10s)")
    assert pets[-1] == last_sent + BOUND and len(pets) == 4
    refreshed["management"] = clock.t  # the partition heals: the reset is still due
    clock.t += 2.5
    assert feeder.tick() == why and len(pets) == 4


def test_one_live_network_keeps_it_fed_the_newest_refresh_counts():
    # the peers report a host down only when its keys expired on every network
    assert lease_lost({"management": 0.0, "storage": 95.0}, 0.0, 100.0, BOUND) is None
    assert lease_lost({"management": 0.0, "storage": 89.0}, 0.0, 100.0, BOUND)


def test_a_daemon_that_never_got_a_lease_counts_from_its_start():
    assert lease_lost({"management": None}, 50.0, 60.0, BOUND) is None
    assert lease_lost({"management": None}, 50.0, 60.5, BOUND) == (
        "lost its peers: no etcd lease since start, not refreshed for 10.5s "
        "(> watchdog_lease_bound 10s)")


def _conf(**peers):
    conf = config.new_conf()
    hm_opts.register_opts(conf)
    conf([], project="x", default_config_files=[])
    conf.set_override("monitoring_driver", peers.pop("driver", "etcd"), group="host")
    for k, v in peers.items():
        conf.set_override(k, v, group=opts.GROUP)
    return conf


def test_deadline_arithmetic_is_checked():
    # off by default: nothing to check
    assert opts.watchdog_problems(_conf()) == []
    ok = dict(watchdog_device="/dev/watchdog1", watchdog_timeout=10, etcd_lease_ttl=TTL,
              etcd_self_fence_deadline=20.0)
    assert opts.watchdog_problems(_conf(**ok)) == []  # 10 + bound 0 (= TTL 10) <= 20
    assert opts.lease_bound(_conf(**ok)) == TTL
    assert opts.watchdog_problems(_conf(**{**ok, "etcd_self_fence_deadline": 19.5})) == [
        "[hostmonitor_peers] watchdog_timeout 10s + watchdog_lease_bound 10s = 20s exceeds "
        "etcd_self_fence_deadline 19.5s: the peers would report this host NORMAL before it "
        "is surely reset (raise etcd_self_fence_deadline on every host, or lower the other "
        "two)"]
    # the timeout the driver took (rounded up) counts, not the configured one
    assert opts.watchdog_problems(_conf(**ok), timeout=11)
    assert "less than etcd_lease_ttl" in opts.watchdog_problems(
        _conf(**{**ok, "watchdog_lease_bound": 5.0}))[0]
    assert opts.watchdog_problems(_conf(**{**ok, "driver": "default"})) == [
        "[hostmonitor_peers] watchdog_device is set but [host] monitoring_driver is "
        "'default': the watchdog is fed by the etcd driver only (set monitoring_driver = "
        "etcd or unset watchdog_device)"]


def test_check_config_and_start_refuse_a_watchdog_the_deadline_does_not_cover(tmp_path):
    wd = tmp_path / "watchdog"
    wd.write_bytes(b"")
    conf = write_conf(tmp_path / "hm.conf", hostname="x", state_path=tmp_path / "state",
                      endpoint=None, sections={
                          "host": {"monitoring_driver": "etcd"},
                          "hostmonitor_peers": {"watchdog_device": wd, "watchdog_timeout": 10,
                                                "etcd_lease_ttl": TTL,
                                                "etcd_self_fence_deadline": 15}})
    r = cli(conf, "check-config")
    assert r.returncode != 0
    assert ("watchdog_timeout 10s + watchdog_lease_bound 10s = 20s exceeds "
            "etcd_self_fence_deadline 15s") in r.stdout + r.stderr
    assert wd.read_bytes() == b""  # never opened, never armed


def test_check_config_accepts_a_covered_watchdog(tmp_path):
    conf = write_conf(tmp_path / "hm.conf", hostname="x", state_path=tmp_path / "state",
                      endpoint=None, sections={
                          "host": {"monitoring_driver": "etcd"},
                          "hostmonitor_peers": {"watchdog_device": "/dev/watchdog1",
                                                "etcd_lease_ttl": TTL,
                                                "etcd_self_fence_deadline": 20}})
    r = cli(conf, "check-config")
    assert "watchdog" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_driver_that_rounds_the_timeout_up_past_the_deadline_is_refused(tmp_path):
    """At start the timeout the device reports counts: a driver that took 11 s where
    10 s were asked breaks 10 + 10 <= 20; the device is disarmed (magic close) and the
    etcd source does not start. A reload is checked against that timeout too."""
    from hostmonitor.peers.etcd_source import EtcdSource

    wd = tmp_path / "watchdog"
    wd.write_bytes(b"")
    conf = _conf(watchdog_device=str(wd), watchdog_timeout=10, etcd_lease_ttl=TTL,
                 etcd_self_fence_deadline=20.0)
    src = EtcdSource(conf, emit=None)
    device = src.feeder.device
    real_open = device.open
    device.open = lambda timeout: real_open(timeout) and 11  # what a rounding driver says
    with pytest.raises(watchdog.WatchdogError, match=(
            r"took a timeout of 11s: .*watchdog_timeout 11s \+ watchdog_lease_bound 10s = "
            r"21s exceeds etcd_self_fence_deadline 20s")):
        src.start()
    assert wd.read_bytes() == b"V" and device.fd is None  # disarmed, never fed
    assert src.feeder.pets == 0
    # armed with 10 s, a reload lowering the deadline below 10 + 10 is refused
    device.timeout = 10
    conf.set_override("etcd_self_fence_deadline", 19.0, group=opts.GROUP)
    with pytest.raises(ValueError, match="exceeds etcd_self_fence_deadline 19s"):
        src.reload(conf)
