"""Parsing of Pacemaker's XML output: real crm_mon/stonith_admin runs on CIB files, and the
recorded stonith_admin --history format (the fencer cannot run here)."""
from __future__ import annotations

import datetime as dt
import os
import re
import subprocess

import pytest

from hostmonitor.peers import crm
from monitors import config
from hostmonitor.peers import opts
from hostmonitor.peers.sources import build_peer_sources
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


def test_recorded_fence_history_format():
    import xml.etree.ElementTree as ET

    text = (PEERS_DIR / "data/stonith_admin_history.xml").read_text()
    text = re.sub(r"<!--.*?-->\s*", "", text, flags=re.S)
    text = text.replace("TARGET", "n2").replace("COMPLETED", "2026-11-24 05:41:45 +00:00")
    events = crm.parse_fence_history(ET.fromstring(text))
    assert [(e.status, e.action, e.target) for e in events] == [
        ("success", "reboot", "n2"), ("failed", "reboot", "n2")]
    since = dt.datetime(2026, 11, 24, 5, 40, tzinfo=dt.timezone.utc)
    assert crm.fenced_since(events, "n2", since) is events[0]
    assert crm.fenced_since(events, "n2", since + dt.timedelta(hours=1)) is None
    assert crm.fenced_since(events, "n3", since) is None


def _conf(driver):
    conf = config.new_conf()
    opts.register_opts(conf)
    conf([], project="x")
    conf.set_override("monitoring_driver", driver, group="host")
    return conf


def test_driver_selection():
    assert [s.name for s in build_peer_sources(_conf("default"))] == ["pacemaker"]
    assert [s.name for s in build_peer_sources(_conf("etcd"))] == ["etcd"]
    assert build_peer_sources(_conf("none")) == []
    with pytest.raises(ValueError, match="monitoring_driver"):
        build_peer_sources(_conf("consul"))
    assert opts.check(_conf("consul"))
