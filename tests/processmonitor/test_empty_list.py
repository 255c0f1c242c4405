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


def test_reload_command_fails_on_an_invalid_process_list(pm, standins, tmp_path):
    """What `systemctl reload ha-processmonitor` runs: a list with an error is refused, the
    command exits 1 with the file and line, the old list keeps being watched, and status
    says WARNING until the file is fixed."""
    standins.start(NOVA)
    daemon = pm([{"process_name": standins.name(NOVA),
                  "restart_command": fail(tmp_path / "stamps")}])
    good = daemon.plist.read_text()
    daemon.plist.write_text(good + "- process_name: ''\n  restart_command: true\n")
    r = cli(daemon.conf, "reload", "--daemon", "processmonitor", "--pid", str(daemon.proc.pid))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "processmonitor refused the new configuration" in r.stderr
    assert str(daemon.plist) in r.stderr
    r = cli(daemon.conf, "status", "--daemon", "processmonitor")
    assert r.returncode == 1 and "reload refused" in r.stdout, r.stdout
    daemon.plist.write_text(good)
    r = cli(daemon.conf, "reload", "--daemon", "processmonitor")
    assert r.returncode == 0, r.stderr
    assert cli(daemon.conf, "status", "--daemon", "processmonitor").returncode == 0
