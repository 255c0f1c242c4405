"""Parsing of Pacemaker's XML output: real crm_mon/stonith_admin runs on CIB files, and
stonith_admin --history output captured from the live cluster (tests/fixtures/
pacemaker_cluster.py; the live behaviour itself is tested in test_pacemaker_live.py)."""
from __future__ import annotations

import datetime as dt
import os
import re
import subprocess

import pytest

from hostmonitor import opts as hm_opts
from monitors import source as source_kit
from hostmonitor.peers import crm
from monitors import config
from hostmonitor.peers import opts
from tests.fixtures.cib import Cib
from tests.hostmonitor.peers.helpers import PEERS_DIR


def test_real_crm_mon_on_cib_file(tmp_path, monkeypatch):
    cib = Cib(tmp_path / "cib.xml")
    cib.write({"n1": True, "n2": False}, remotes={"r1": True, "r2": False}, quorum=False)
    monkeypatch.setenv("CIB_file", str(cib.path))
    view = crm.cluster_view("crm_mon", 5)
    assert view.quorum is False and view.dc == "n1"
    assert {n: (v.online, v.type) for n, v in view.nodes.items()} == {
        "n1": (True, "member"), "n2": (False, "member"),
        "r1": (True, "remote"), "r2": (False, "remote")}


def test_remote_node_online_in_crm_mon_but_not_connected_is_offline(tmp_path, monkeypatch):
    """crm_mon 2.1.5 shows a dead remote node online while its connection's start is
    pending (seen live, tests/hostmonitor/peers/test_pacemaker_remote.py); the CIB's
    node_state in_ccm="false" says it is not connected."""
    cib = Cib(tmp_path / "cib.xml")
    cib.write({"n1": True}, remotes={"r1": True, "r2": True}, unconfirmed=("r1",))
    monkeypatch.setenv("CIB_file", str(cib.path))
    raw = crm.parse_crm_mon(crm.run_xml(["crm_mon", "--output-as=xml", "-1"], 5))
    assert raw.nodes["r1"].online is True  # what crm_mon alone says
    assert crm.remote_states("crm_mon", 5) == {"r1": "false", "r2": "true"}
    view = crm.cluster_view("crm_mon", 5)
    assert {n: v.online for n, v in view.nodes.items()} == {"n1": True, "r1": False,
                                                            "r2": True}


def test_real_stonith_admin_without_fencer_is_a_command_error(tmp_path, monkeypatch):
    cib = Cib(tmp_path / "cib.xml")
    cib.write({"n1": True})
    monkeypatch.setenv("CIB_file", str(cib.path))
    with pytest.raises(crm.CommandError, match="fencer"):
        crm.fence_history("stonith_admin", "n1", 5)
    recorded = (PEERS_DIR / "data/stonith_admin_no_fencer.xml").read_text()
    live = subprocess.run(["stonith_admin", "--history", "*", "--output-as=xml"],
                          capture_output=True, text=True, env={**os.environ}).stdout
    assert re.sub(r"<!--.*?-->\s*", "", recorded, flags=re.S).strip() == live.strip()


def _recorded(name: str):
    import xml.etree.ElementTree as ET

    return crm.parse_fence_history(ET.fromstring((PEERS_DIR / "data" / name).read_text()))


def test_real_fence_history_verbose_lists_failures_and_every_success_newest_first():
    events = _recorded("stonith_admin_history_verbose.xml")
    assert [e.status for e in events] == ["success"] + ["failed"] * 10
    assert events[0].completed == dt.datetime(2026, 11, 25, 20, 36, 35, tzinfo=dt.timezone.utc)
    # the failed attempts never count as a fencing
    assert crm.fenced_since(events[1:], "node1", dt.datetime(
        2026, 11, 25, 20, 35, tzinfo=dt.timezone.utc)) is None
    assert crm.fenced_since(events, "node1", dt.datetime(
        2026, 11, 25, 20, 35, tzinfo=dt.timezone.utc)) is events[0]


def test_second_fencing_of_a_host_is_only_in_the_verbose_history():
    """The live-cluster bug: without --verbose 2.1.5 prints only the oldest success, so a
    host's second failure never looked fenced (it went out UNKNOWN after stonith_wait)."""
    second_failure_seen_online = dt.datetime(2026, 11, 25, 20, 33, 30, tzinfo=dt.timezone.utc)
    verbose = _recorded("stonith_admin_history_twice_verbose.xml")
    plain = _recorded("stonith_admin_history_twice_plain.xml")
    assert len(verbose) == 2 and len(plain) == 1
    assert crm.fenced_since(plain, "node3", second_failure_seen_online) is None
    assert crm.fenced_since(verbose, "node3", second_failure_seen_online) is verbose[0]
    assert crm.fenced_since(verbose, "node2", second_failure_seen_online) is None


def test_completed_time_formats():
    utc = dt.timezone.utc
    assert crm.parse_time("2026-11-25 20:34:06Z") == dt.datetime(2026, 11, 25, 20, 34, 6,
                                                                tzinfo=utc)
    assert crm.parse_time("2026-11-24 05:41:45 +00:00") == dt.datetime(2026, 11, 24, 5, 41,
                                                                      45, tzinfo=utc)
    assert crm.parse_time(None) is None and crm.parse_time("soon") is None


def _conf(driver):
    conf = config.new_conf()
    hm_opts.register_opts(conf)
    conf([], project="x", default_config_files=[])
    conf.set_override("monitoring_driver", driver, group="host")
    return conf


def test_driver_selection():
    def built(driver):
        emitters = []
        sources = source_kit.build(_conf(driver), "hostmonitor",
                                   lambda name: emitters.append(name) or name)
        assert [s.emit for s in sources] == emitters  # each built with its own emitter
        return [s.name for s in sources]

    # the registry builds what the daemon runs (no local option set: no local source)
    for driver in ("default", "simple", "pacemaker"):
        assert built(driver) == ["pacemaker"]
    assert built("etcd") == ["etcd"]
    assert built("none") == []
    # an unknown driver is refused by the validation at start and reload, naming the
    # option and what it accepts, not silently run without peers
    assert not opts.check(_conf("etcd")) and not hm_opts.check(_conf("none"))
    with pytest.raises(ValueError, match=r"\[host\] monitoring_driver = consul: unknown "
                                         r"\(accepted: default, simple, pacemaker, etcd, none\)"):
        hm_opts.validate(_conf("consul"))
    assert built("consul") == []
