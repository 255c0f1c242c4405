"""WATCHDOG=1 and READY tell the truth: pings stop while the outbox does not answer or a
source's loop is dead, and a daemon with nothing to watch exits instead of going READY.
sd_notify goes to a socket the test owns (as systemd's NOTIFY_SOCKET)."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from tests.helpers import BIN, Daemon, cli, deliverer, wait_for, write_conf


@pytest.fixture
def conf(tmp_path, masakari_api, host):
    return write_conf(tmp_path / "monitors.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint=masakari_api.endpoint)


def pings(daemon, seconds: float) -> int:
    daemon.notify.drain()
    daemon.notify.messages.clear()
    time.sleep(seconds)
    return sum("WATCHDOG" in m for m in daemon.notify.drain())


def test_no_ping_while_the_outbox_does_not_answer(tmp_path, conf):
    with deliverer(conf, env={"WATCHDOG_USEC": "400000"}) as d:  # a ping every 0.2 s
        assert pings(d, 1.0) >= 3
        # another process holds the outbox's write lock: the probe's write waits
        db = sqlite3.connect(tmp_path / "state" / "outbox.sqlite", isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        try:
            time.sleep(0.5)  # a round already past its probe may still ping once
            assert pings(d, 2.0) == 0
        finally:
            db.execute("ROLLBACK")
            db.close()
        assert pings(d, 1.5) >= 3  # answers again: pings again


DYING = textwrap.dedent("""
    import os, sys, time
    from monitors import service
    from monitors.source import Health, Source

    TRIGGER = sys.argv.pop(1)

    class Dying(Source):
        '''A source whose loop ends when TRIGGER exists (a real thread really ending).'''
        name = "dying"
        def start(self):
            self.spawn(self.run, "dying-loop")
        def run(self):
            while not os.path.exists(TRIGGER):
                time.sleep(0.05)
        def health(self): return Health(True, "looping")

    sys.exit(service.run("dyingmonitor", lambda conf, emitter_for: [Dying(conf, emitter_for("dying"))], sys.argv[1:]))
""")


def test_no_ping_once_a_source_loop_died_and_status_names_it(tmp_path, conf):
    script = tmp_path / "dying.py"
    script.write_text(DYING)
    trigger = tmp_path / "die"
    d = Daemon("dyingmonitor", conf, env={"WATCHDOG_USEC": "400000"},
               argv=[sys.executable, str(script), str(trigger), "--config-file", str(conf)])
    with d:
        assert pings(d, 1.0) >= 3
        trigger.touch()
        time.sleep(0.5)
        assert pings(d, 2.0) == 0
        line = next(m["STATUS"] for m in reversed(d.notify.messages) if "STATUS" in m)
        assert "dying: thread(s) died: dying-loop" in line
        r = cli(conf, "status")
        assert r.returncode == 2 and "dying: thread(s) died: dying-loop" in r.stdout, r.stdout


def test_no_source_could_start_exits_non_zero_with_one_line(tmp_path, conf):
    """libvirt-python missing: ha-instancemonitor says so and exits 1 (no READY)."""
    fake = tmp_path / "nolibvirt"
    fake.mkdir()
    (fake / "libvirt.py").write_text("raise ImportError('No module named libvirt (test)')\n")
    d = Daemon("instancemonitor", conf, env={"PYTHONPATH": str(fake)})
    d.start(wait_ready=False)
    assert d.proc.wait(30) == 1
    d.notify.drain()
    assert not any("READY" in m for m in d.notify.messages)
    errors = [line for line in d.log_text().splitlines() if "cannot start" in line]
    assert any("ha-instancemonitor: cannot start: " in line and "libvirt" in line
               for line in errors), d.log_text()[-2000:]
    d.notify.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_read_only_state_path_exits_non_zero(tmp_path, masakari_api, host):
    state = tmp_path / f"ro-{os.getpid()}"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1M", "tmpfs", str(state)],
                   check=True)
    try:
        conf = write_conf(tmp_path / "ro.conf", hostname=host, state_path=state,
                          endpoint=masakari_api.endpoint)
        r = subprocess.run([str(BIN / "ha-monitors"), "--config-file", str(conf), "deliver"],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "NOTIFY_SOCKET": ""})
        # Refused by the configuration check before the outbox is even opened: exit 2,
        # one line naming the option and the cause, never READY.
        assert r.returncode == 2, r.stderr
        assert "state_path" in r.stderr and "read-only file system" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    finally:
        subprocess.run(["umount", str(state)], check=False)
