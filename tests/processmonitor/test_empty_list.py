"""An empty process list watches nothing: a warning at start and on reload, in the log and
in `ha-monitors status`, never silence."""
from __future__ import annotations

import signal

from tests.helpers import cli, wait_for
from tests.processmonitor.conftest import fail, write_list

NOVA = "fake-nova-compute"


def test_empty_process_list_is_a_warning_at_start_and_on_reload(pm, standins, tmp_path):
    daemon = pm([])
    assert "names no process: nothing is watched" in daemon.log_text()
    r = cli(daemon.conf, "status", "--daemon", "processmonitor")
    assert r.returncode == 1, r.stdout
    assert "WARNING: processmonitor: source processes: the process list" in r.stdout
    assert "names no process: nothing is watched" in r.stdout
    # a list with an entry: OK; emptied again on SIGHUP: the warning comes back
    write_list(daemon.plist, [{"process_name": standins.name(NOVA),
                               "restart_command": fail(tmp_path / "stamps")}])
    standins.start(NOVA)
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: cli(daemon.conf, "status", "--daemon", "processmonitor").returncode == 0,
             20, what="OK with one process watched")
    write_list(daemon.plist, [])
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: cli(daemon.conf, "status", "--daemon", "processmonitor").returncode == 1,
             20, what="WARNING again after an empty list was loaded")
    assert daemon.log_text().count("names no process: nothing is watched") >= 2
