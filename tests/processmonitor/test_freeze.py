"""A process that is alive but does no work (SIGSTOP, a tracer, stuck in "D") is killed and
restarted like a crashed one once it stayed frozen for freeze_timeout; a short stop is not.
The real daemon, real stand-in processes stopped with real signals, the real masakari-api."""
from __future__ import annotations

import os
import signal
import subprocess
import time

from processmonitor.freeze import FreezeTracker
from processmonitor.process_list import load
from tests.helpers import cli
from tests.hostmonitor import kernel_faults as kf
from tests.processmonitor.conftest import (fail, outbox_rows, process_notifications, spawn,
                                           stamps, verdict, wait_for, wait_log,
                                           wait_notification, write_list)

NOVA = "fake-nova-compute"
FAST = {"freeze_check_interval": 0.2, "liveness_interval": 0.2}


def state(pid: int) -> str | None:
    """The kernel's state letter of ``pid`` (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except OSError:
        return None


def status(daemon) -> str:
    """`ha-monitors status` as an operator reads it."""
    return cli(daemon.conf, "status", "--daemon", "processmonitor").stdout


def gone(pid: int) -> bool:
    return state(pid) in (None, "Z", "X")


def runs(pid: int) -> bool:
    """``pid`` is running or sleeping, not stopped or gone. A process just spawned may be
    in "D" for a moment while its pages are read in on a loaded machine, so this waits
    for S or R instead of sampling once."""
    try:
        wait_for(lambda: state(pid) in ("S", "R"), 10, what=f"pid {pid} running")
    except AssertionError:
        return False
    return True


def test_sigstopped_process_is_killed_and_restarted(pm, standins, tmp_path, masakari_api,
                                                    host):
    """SIGSTOP (state T) for longer than freeze_timeout: the stopped pid is SIGKILLed, the
    restart command runs, the new pid runs, and nothing is sent (the restart helped)."""
    log = tmp_path / "stamps"
    standins.start(NOVA)
    (old,) = standins.pids(NOVA)
    daemon = pm([{"process_name": standins.name(NOVA), "notify_name": "nova-compute",
                  "restart_command": spawn(log, NOVA, standins)}],
                processmonitor={"freeze_timeout": 1, **FAST})
    wait_log(daemon, "watching 1 process(es)")
    os.kill(old, signal.SIGSTOP)
    new = wait_for(lambda: [p for p in standins.pids(NOVA) if p != old], 15,
                   what="nova-compute stand-in restarted after its freeze")
    assert gone(old), "the frozen process was left behind"
    assert runs(new[0]), "the new process does not run"
    assert len(stamps(log, "start")) == 1
    wait_log(daemon, "restarted (attempt 1 of 1)")
    text = daemon.log_text()
    assert f"(pid {old}) is frozen: stopped (T) with no CPU time or context switch" in text
    assert f"frozen pid {old} killed (SIGKILL)" in text
    assert process_notifications(masakari_api, host) == []
    assert verdict(tmp_path, "nova-compute")["verdict"] == "running"
    # the restarted pid is watched for freezes too
    os.kill(new[0], signal.SIGSTOP)
    wait_for(lambda: len(stamps(log, "start")) == 2 and gone(new[0]), 15,
             what="second freeze restarted")


def test_frozen_process_whose_restart_fails_sends_one_stopped(pm, standins, tmp_path,
                                                              masakari_api, host):
    """The restart command fails: exactly one PROCESS STOPPED reaches the API, as for a
    crash; its decision says the process was frozen. The entry's own freeze_timeout
    applies (the global one is off)."""
    log = tmp_path / "stamps"
    standins.start(NOVA)
    (old,) = standins.pids(NOVA)
    daemon = pm([{"process_name": standins.name(NOVA), "notify_name": "nova-compute",
                  "restart_command": fail(log, "nova"), "freeze_timeout": 1}],
                process={"restart_retries": 1, "restart_interval": 0},
                processmonitor={"freeze_timeout": 0, **FAST})
    wait_log(daemon, "watching 1 process(es)")
    os.kill(old, signal.SIGSTOP)
    rows = wait_notification(masakari_api, host, "STOPPED")
    assert rows[0]["payload"] == {"event": "STOPPED", "process_name": "nova-compute"}
    assert gone(old)
    assert len(stamps(log, "fail")) == 2  # 1 + restart_retries, as for a crash
    (row,) = outbox_rows(daemon)
    assert row["notification"]["payload"]["event"] == "STOPPED"
    time.sleep(1)  # further freeze polls and scans must not send another
    assert [(p.payload["event"], p.status) for p in
            masakari_api.posts(type="PROCESS", hostname=host)] == [("STOPPED", 202)]
    assert len(process_notifications(masakari_api, host, "STOPPED")) == 1
    assert verdict(tmp_path, "nova-compute")["verdict"] == "gave_up"
    r = cli(daemon.conf, "outbox", "show", str(row["id"]))
    assert r.returncode == 0, r.stderr
    assert "frozen: stopped (T)" in r.stdout


def test_entry_freeze_timeout_zero_leaves_a_stopped_process_until_reloaded(
        pm, standins, tmp_path, masakari_api, host):
    """An operator debugging the process sets the entry's freeze_timeout to 0: a stop is
    left alone; once the entry's own bound is removed (SIGHUP), the global one applies and
    the still-stopped process is restarted."""
    log = tmp_path / "stamps"
    standins.start(NOVA)
    (pid,) = standins.pids(NOVA)
    entry = {"process_name": standins.name(NOVA),
             "restart_command": spawn(log, NOVA, standins)}
    daemon = pm([{**entry, "freeze_timeout": 0}],
                processmonitor={"freeze_timeout": 1, **FAST})
    wait_log(daemon, "watching 1 process(es)")
    os.kill(pid, signal.SIGSTOP)
    time.sleep(2.5)  # more than twice the global bound
    assert stamps(log) == [] and state(pid) == "T"
    write_list(daemon.plist, [entry])
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: len(stamps(log, "start")) == 1 and gone(pid), 15,
             what="restarted once the entry's own freeze_timeout 0 was removed")
    assert process_notifications(masakari_api, host) == []


def test_short_stop_then_continue_is_not_restarted(pm, standins, tmp_path, masakari_api,
                                                   host):
    """SIGSTOP then SIGCONT within freeze_timeout: no kill, no restart. The same process
    stopped for longer afterwards is restarted (the detection was on all along)."""
    log = tmp_path / "stamps"
    standins.start(NOVA)
    (pid,) = standins.pids(NOVA)
    daemon = pm([{"process_name": standins.name(NOVA),
                  "restart_command": spawn(log, NOVA, standins)}],
                processmonitor={"freeze_timeout": 2, **FAST})
    wait_log(daemon, "watching 1 process(es)")
    for _ in range(4):  # stopped 4 x 0.6 s (more than the bound in all, never in one go):
        os.kill(pid, signal.SIGSTOP)  # the count starts again at each continue
        time.sleep(0.6)
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.4)
    time.sleep(1.5)  # well past the bound since the first stop
    assert standins.pids(NOVA) == [pid] and runs(pid)
    assert stamps(log) == []
    assert "frozen" not in daemon.log_text()
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: len(stamps(log, "start")) == 1 and gone(pid), 15,
             what="the long freeze restarted")
    assert process_notifications(masakari_api, host) == []


def test_process_stuck_in_d_on_hung_storage_is_restarted(pm, standins, tmp_path,
                                                         masakari_api, host):
    """A real "D": a direct write into ext4 on a loop device whose backing file is on a
    FUSE mount whose daemon is SIGSTOPped (hung storage). It is detected as in
    uninterruptible sleep, SIGKILLed, and, whether or not it could die yet, the restart
    commands run and the new process runs; when the storage comes back the old one is
    gone (the SIGKILL took effect)."""
    log = tmp_path / "stamps"
    name = f"{standins.tag}-stuck."
    with kf.frozen_fuse_ext4(tmp_path) as (mnt, _dev, freeze, thaw):
        writer = None
        try:
            freeze()
            writer = subprocess.Popen(["dd", "if=/dev/zero", f"of={mnt}/{name}img", "bs=1M",
                                       "count=8", "oflag=direct"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for(lambda: state(writer.pid) == "D", 20, what="the writer blocked in D")
            daemon = pm([{"process_name": name,  # it finds the writer running at start-up
                          "restart_command": spawn(log, "fake-nova-compute", standins,
                                                   "-stuck")}],
                        processmonitor={"freeze_timeout": 1, "freeze_kill_wait": 1, **FAST})
            assert state(writer.pid) == "D"
            new = wait_for(lambda: standins.pids("fake-nova-compute", "-stuck"), 20,
                           what="restarted after the writer hung")
            text = daemon.log_text()
            assert f"(pid {writer.pid}) is frozen: in uninterruptible sleep (D)" in text
            assert runs(new[0])
            assert state(writer.pid) == "D"  # SIGKILLed, but it cannot die in the kernel
            wait_for(lambda: "1 frozen" in status(daemon), 15, what="status: 1 frozen")
            thaw()
            assert writer.wait(30) == -signal.SIGKILL  # killed, not finished
            wait_for(lambda: "frozen" not in status(daemon), 15, what="status: none frozen")
            assert process_notifications(masakari_api, host) == []
        finally:
            thaw()
            if writer:
                writer.wait(30)


def test_liveness_command_failing_for_the_bound_restarts(pm, standins, tmp_path,
                                                         masakari_api, host):
    """A process that runs (state S) but whose heartbeat file vanished: its
    liveness_command fails, and after freeze_timeout it is killed and restarted."""
    log = tmp_path / "stamps"
    beat = tmp_path / "heartbeat"
    beat.write_text("ok")
    standins.start(NOVA)
    (old,) = standins.pids(NOVA)
    daemon = pm([{"process_name": standins.name(NOVA),
                  "restart_command": spawn(log, NOVA, standins),
                  "liveness_command": f"test -e {beat}"}],
                processmonitor={"freeze_timeout": 1, **FAST})
    wait_log(daemon, "watching 1 process(es)")
    time.sleep(1.5)  # the command succeeds meanwhile: nothing happens
    assert standins.pids(NOVA) == [old] and stamps(log) == []
    beat.unlink()
    new = wait_for(lambda: [p for p in standins.pids(NOVA) if p != old], 15,
                   what="restart after the liveness command kept failing")
    assert gone(old)
    text = daemon.log_text()
    assert "liveness_command" in text and "failing its liveness_command" in text
    assert runs(new[0])
    assert process_notifications(masakari_api, host) == []


def test_hanging_liveness_command_is_bounded_and_blocks_no_other_entry(
        pm, standins, tmp_path, masakari_api, host):
    """A liveness command that hangs is killed at its bound (min of command_timeout and
    freeze_timeout) and counts as failed, so its process is restarted after
    freeze_timeout; meanwhile another entry's crash is restarted at once (the command runs
    in its entry's worker thread, not in the watcher's loop)."""
    log = tmp_path / "stamps"
    standins.start(NOVA, "-hung")
    standins.start(NOVA, "-other")
    (hung,) = standins.pids(NOVA, "-hung")
    daemon = pm([{"process_name": standins.name(NOVA, "-hung"),
                  "restart_command": spawn(log, NOVA, standins, "-hung"),
                  "liveness_command": "sleep 30"},
                 {"process_name": standins.name(NOVA, "-other"),
                  "restart_command": spawn(log, NOVA, standins, "-other")}],
                processmonitor={"freeze_timeout": 3, **FAST})
    wait_log(daemon, "watching 2 process(es)")
    standins.kill(NOVA, "-other")
    wait_for(lambda: standins.pids(NOVA, "-other"), 10, what="the other entry restarted")
    assert "timed out" not in daemon.log_text()  # the first liveness run still hangs
    wait_for(lambda: [p for p in standins.pids(NOVA, "-hung") if p != hung], 20,
             what="restart after the liveness command kept timing out")
    assert gone(hung)
    assert "liveness_command 'sleep 30' failed: timed out after 3s (killed)" \
        in daemon.log_text()
    assert process_notifications(masakari_api, host) == []


def test_freeze_keys_are_optional_and_validated(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("""\
- process_name: plain
- process_name: own-bound
  freeze_timeout: 30
  liveness_command: test -e /run/beat
- process_name: bad-bound
  freeze_timeout: soon
- process_name: no-such-check
  liveness_command: /no/such/check
""")
    plist = load(str(path))
    assert plist.warnings == [f"{path}:8: entry 4 ('no-such-check'): liveness_command: "
                              "'/no/such/check' is not an executable found now; every "
                              "check will fail (the process will be restarted as frozen)"]
    plain, own, _missing = plist.entries
    assert plain.freeze_timeout is None and plain.liveness_command is None
    assert own.freeze_timeout == 30 and own.liveness_command == ["test", "-e", "/run/beat"]
    assert plist.errors == [f"{path}:6: entry 3 ('bad-bound'): freeze_timeout: expected "
                            "seconds >= 0 (0: off), got 'soon'; entry left out"]


def test_busy_uninterruptible_sleep_is_not_a_freeze():
    """A process seen in "D" at every look but making progress (CPU time or context
    switches move: a busy disk) is not frozen; once nothing moves it is, after the bound."""
    samples = iter([("D", 10, 5), ("D", 11, 5), ("D", 11, 9), ("D", 11, 9), ("D", 11, 9),
                    ("S", 11, 10)])
    tracker = FreezeTracker()
    seen = []
    for now in range(6):
        seen.append(tracker.sample({42: 2.0}, float(now), read=lambda pid: next(samples)))
    assert seen == [([], []), ([], []), ([], []), ([], []), ([42], []), ([], [42])]


def test_a_killed_pid_never_thaws():
    """A pid processmonitor SIGKILLed while in "D" may run for an instant when the storage
    answers, on its way to die: that must not read as the process coming back (it would
    send STARTED after a STOPPED)."""
    samples = iter([("D", 1, 1), ("D", 1, 1), ("R", 2, 2)])
    tracker = FreezeTracker()
    assert tracker.sample({7: 1.0}, 0.0, read=lambda pid: next(samples)) == ([], [])
    assert tracker.sample({7: 1.0}, 1.0, read=lambda pid: next(samples)) == ([7], [])
    tracker.killed(7)
    assert tracker.sample({7: 1.0}, 2.0, read=lambda pid: next(samples)) == ([], [])
    assert 7 in tracker.frozen
