"""A VM fails while the outbox's disk is full, and the daemon is then killed before space
returns: the event was never durable, so the last known domain state must not have moved
past it — the restart's reconciliation reports it. Real libvirtd, a real full tmpfs, the
real API."""
from __future__ import annotations

import datetime as dt
import os
import time
import subprocess

import pytest

from tests.helpers import Daemon, cli, wait_for
from tests.instancemonitor.conftest import vm_events
from tests.processmonitor.test_outbox_faults import fill


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_vm_failure_while_disk_full_survives_a_kill(libvirtd, make_daemon, masakari_api,
                                                   host, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M,mode=0700", "tmpfs", str(state)],
                   check=True)
    try:
        a = libvirtd.create("inst-full")
        daemon = make_daemon(host)
        filler = fill(state)
        a.destroy()
        wait_for(lambda: "held in memory" in daemon.log_text(), 20,
                 what="the detection held in memory")
        r = wait_for(lambda: (lambda r: r if "outbox not writable: disk full" in r.stdout
                              else None)(cli(daemon.conf, "status", "--daemon",
                                             "instancemonitor")), 15, what="status")
        assert r.returncode == 2 and "1 detection(s) held in memory" in r.stdout, r.stdout
        daemon.kill()  # SIGKILL: what was held in memory is gone
        os.unlink(filler)
        assert vm_events(masakari_api, host) == []
        again = Daemon("instancemonitor", daemon.conf)
        with again:
            events = wait_for(lambda: vm_events(masakari_api, host), 20,
                              what="the reconciled event at the API")
            assert events == [("LIFECYCLE", a.UUIDString(), "STOPPED_DESTROYED")]
            assert "reporting the missed LIFECYCLE STOPPED_DESTROYED" in again.log_text()
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


def test_state_file_never_runs_ahead_of_the_outbox(libvirtd, make_daemon, masakari_api, host,
                                                   tmp_path):
    """Only the outbox fails (another process holds its lock past the 30 s busy timeout)
    while the domain-state file can still be written: the saved state must not record the
    failed VM as already seen, or the restart's reconciliation would find nothing to report
    (the event used to be lost this way)."""
    import json
    import sqlite3

    a = libvirtd.create("inst-locked")
    daemon = make_daemon(host)
    lock = sqlite3.connect(tmp_path / "state" / "outbox.sqlite", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        detected = time.time()
        a.destroy()
        wait_for(lambda: "held in memory" in daemon.log_text(), 45,
                 what="the detection held after the busy timeout")
        time.sleep(2)  # the flusher has had its chance to save the domain states
        saved = json.loads((tmp_path / "state" / "instancemonitor-domains.json").read_text())
        assert saved["domains"][a.UUIDString()]["state"] == "running"
        daemon.kill()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    again = Daemon("instancemonitor", daemon.conf)
    with again:
        events = wait_for(lambda: vm_events(masakari_api, host), 20,
                          what="the reconciled event at the API")
        assert events == [("LIFECYCLE", a.UUIDString(), "STOPPED_DESTROYED")]
        # sent as the detection the kill cut short, with its time (the restart came more
        # than 30 s later): had that one reached the outbox, this would be the same one
        assert "(again, as detected before the restart)" in again.log_text()
        sent = masakari_api.notifications(type="VM", hostname=host)[0]["generated_time"]
        at = dt.datetime.fromisoformat(sent).replace(tzinfo=dt.timezone.utc).timestamp()
        assert detected - 1 <= at <= detected + 5, (sent, detected)
