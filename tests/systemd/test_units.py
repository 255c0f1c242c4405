"""Each unit passes `systemd-analyze verify` with no output at all (it exits 0 on unknown
keys and only warns, so any output is a failure), and has what the runtime relies on."""
import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = sorted((Path(__file__).parents[2] / "systemd").glob("*.service"))
BIN = Path(sys.executable).parent


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze missing")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_verifies_clean(unit, tmp_path):
    local = tmp_path / unit.name  # point ExecStart at this checkout's console scripts
    local.write_text(unit.read_text().replace("/usr/bin/ha-", f"{BIN}/ha-"))
    r = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_is_notify_with_watchdog_and_reload(unit):
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str
    parser.read(unit)
    service = parser["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) >= 10
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service["NotifyAccess"] == "main"  # the daemon notifies from its main process
    assert service["StateDirectory"] == "compute-ha-monitors"
    assert (BIN / Path(service["ExecStart"].split()[0]).name).exists()
