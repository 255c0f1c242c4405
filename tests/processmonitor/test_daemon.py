"""ha-processmonitor end to end: real stand-in processes, real restart commands, the real
masakari-api reading back the PROCESS notifications as it stored them."""
from __future__ import annotations

import signal
import time

from tests.helpers import cli
from tests.processmonitor.conftest import (fail, outbox_rows, process_notifications, spawn,
                                           stamps, verdict, wait_for, wait_log,
                                           wait_notification)

NOVA, LIBVIRT = "fake-nova-compute", "fake-libvirtd"


def test_start_only_missing_then_sigkill_restart_succeeds_without_stopped(
        pm, standins, tmp_path, masakari_api, host):
    """Start-up runs start commands only for the missing process; a SIGKILLed process is
    restarted (pidfd, well under a second) and no STOPPED is sent when the restart worked."""
    standins.start(NOVA)  # already running: its start_command must not run
    log = tmp_path / "stamps"
    daemon = pm([
        {"process_name": standins.name(NOVA), "start_command": spawn(log, NOVA, standins),
         "pre_start_command": None, "post_start_command": "",
         "restart_command": spawn(log, NOVA, standins), "run_as_root": False},
        {"process_name": standins.name(LIBVIRT),
         "start_command": spawn(log, LIBVIRT, standins),
         "restart_command": spawn(log, LIBVIRT, standins)},
    ])
    wait_for(lambda: standins.pids(LIBVIRT), 10, what="libvirtd stand-in started")
    started = stamps(log, "start")
    assert len(started) == 1 and LIBVIRT in started[0][2]  # nova-compute was not re-run
    old = standins.pids(NOVA)
    killed_at = time.time()
    standins.kill(NOVA, sig=signal.SIGKILL)
    wait_for(lambda: [p for p in standins.pids(NOVA) if p not in old], 10,
             what="nova-compute stand-in restarted")
    restart = [s for s in stamps(log, "start") if NOVA in s[2]]
    assert len(restart) == 1
    assert restart[0][1] - killed_at < 1.0, "restart command started late"
    wait_log(daemon, f"process {standins.name(NOVA)} restarted (attempt 1 of 1)")
    time.sleep(0.5)
    assert process_notifications(masakari_api, host) == []
    # the new pid is watched too: a second kill is restarted again
    standins.kill(NOVA, sig=signal.SIGTERM)
    wait_for(lambda: len([s for s in stamps(log, "start") if NOVA in s[2]]) == 2, 10,
             what="second restart")


def test_failed_restart_sends_stopped_then_started(pm, standins, tmp_path, masakari_api,
                                                   host):
    """Every attempt fails → one STOPPED (hostname = [DEFAULT] hostname, process_name as
    masakari-monitors sends it); when the process runs again → STARTED."""
    log = tmp_path / "stamps"
    standins.start(NOVA)
    daemon = pm([{"process_name": standins.name(NOVA), "notify_name": "nova-compute",
                  "restart_command": fail(log, "nova"),
                  "restart_retries": 2, "restart_interval": 0.2}])
    standins.kill(NOVA, sig=signal.SIGTERM)
    rows = wait_notification(masakari_api, host, "STOPPED")
    assert len(stamps(log, "fail")) == 3  # 1 + restart_retries
    assert rows[0]["payload"] == {"event": "STOPPED", "process_name": "nova-compute"}
    assert rows[0]["source_host_uuid"] == masakari_api.host_uuid(host)
    assert "exited with status 1; stderr: cannot restart nova" in daemon.log_text()
    # the verdict file hostmonitor reads says what the outbox holds: gave up, that row
    (stopped_row,) = outbox_rows(daemon)
    assert stopped_row["notification"]["payload"]["event"] == "STOPPED"
    assert verdict(tmp_path, "nova-compute")["verdict"] == "gave_up"
    assert verdict(tmp_path, "nova-compute")["notification"] == stopped_row["id"]
    standins.start(NOVA)  # the operator fixes it
    rows = wait_notification(masakari_api, host, "STARTED")
    assert rows[0]["payload"] == {"event": "STARTED", "process_name": "nova-compute"}
    assert [r["notification"]["payload"]["event"] for r in outbox_rows(daemon)] == \
        ["STOPPED", "STARTED"]
    assert verdict(tmp_path, "nova-compute")["verdict"] == "running"
    assert len(process_notifications(masakari_api, host, "STOPPED")) == 1
    # POSTed once each (a re-send would be answered 409 and not stored)
    assert [(p.payload["event"], p.status) for p in
            masakari_api.posts(type="PROCESS", hostname=host)] == [("STOPPED", 202),
                                                                   ("STARTED", 202)]
    # what the operator reads: the decision (every restart attempt and why it failed) and the
    # API's notification_uuid for both alerts
    r = cli(daemon.conf, "history", "--type", "PROCESS")
    assert r.returncode == 0, r.stderr
    stopped = r.stdout.split(" STOPPED ", 1)[1].split(" STARTED ", 1)[0]
    assert "source    processmonitor/" in stopped
    assert stopped.count("exited with status 1; stderr: cannot restart nova") == 3
    assert f"notification_uuid {rows[0]['notification_uuid']}" not in stopped
    assert f"notification_uuid {process_notifications(masakari_api, host, 'STOPPED')[0]['notification_uuid']}" in stopped
    assert f"notification_uuid {rows[0]['notification_uuid']}" in r.stdout


def test_parallel_restarts_and_a_hanging_one_delays_nobody(pm, standins, tmp_path,
                                                          masakari_api, host):
    """Two processes dying together are restarted at the same time (each restart script
    takes 1 s); a third whose restart command hangs is killed at command_timeout and
    reported STOPPED, without delaying the other two; a missing program is a clear error."""
    log = tmp_path / "stamps"
    standins.start(NOVA)
    standins.start(LIBVIRT)
    standins.start(NOVA, "-hang")
    standins.start(NOVA, "-missing")
    daemon = pm([
        {"process_name": standins.name(NOVA, "-hang"), "restart_command": "sleep 30",
         "notify_name": "hanging"},
        {"process_name": standins.name(NOVA), "restart_command":
            spawn(log, NOVA, standins, delay=1)},
        {"process_name": standins.name(LIBVIRT), "restart_command":
            spawn(log, LIBVIRT, standins, delay=1)},
        {"process_name": standins.name(NOVA, "-missing"),
         "restart_command": "/no/such/restart-program", "notify_name": "missing"},
    ], processmonitor={"command_timeout": 2})
    killed_at = time.time()
    for label in ("-hang", "-missing"):
        standins.kill(NOVA, label)
    standins.kill(NOVA)
    standins.kill(LIBVIRT)
    wait_for(lambda: len(stamps(log, "end")) == 2, 10, what="both restarts done")
    starts = sorted(t for _, t, _ in stamps(log, "start"))
    ends = sorted(t for _, t, _ in stamps(log, "end"))
    assert starts[1] - starts[0] < 0.5, f"restarts ran one after the other: {starts}"
    assert starts[1] < ends[0], "the second restart waited for the first one"
    assert ends[1] - killed_at < 2.0, "a hanging restart delayed the others"
    wait_for(lambda: standins.pids(NOVA) and standins.pids(LIBVIRT), 5, what="both back")
    rows = wait_notification(masakari_api, host, "STOPPED", count=2)
    assert sorted(r["payload"]["process_name"] for r in rows) == ["hanging", "missing"]
    text = daemon.log_text()
    assert "restart_command 'sleep 30' failed: timed out after 2s (killed)" in text
    assert "restart_command '/no/such/restart-program' failed: cannot run: No such file" \
        in text


def test_sighup_invalid_list_keeps_old_one_valid_list_applies(pm, standins, tmp_path,
                                                              masakari_api, host):
    log = tmp_path / "stamps"
    standins.start(NOVA)
    daemon = pm([{"process_name": standins.name(NOVA),
                  "restart_command": spawn(log, NOVA, standins)}],
                processmonitor={"proc_connector": False})  # the scan-only path
    assert "proc connector off" in daemon.log_text()
    daemon.plist.write_text("- process_name: x\n  restart_command: [oops\n")
    daemon.signal(signal.SIGHUP)
    wait_log(daemon, "new configuration rejected, the old one stays in force")
    assert f"{daemon.plist}:3: not valid YAML" in daemon.log_text()
    standins.kill(NOVA)  # the old list is still in force
    wait_for(lambda: stamps(log, "start"), 10, what="restart under the old list")
    # a valid list with one bad entry is rejected as a whole (nothing silently dropped)
    daemon.plist.write_text(f"- process_name: '{standins.name(NOVA)}'\n"
                            f"  restart_command: {fail(log)}\n- start_command: x\n")
    daemon.signal(signal.SIGHUP)
    wait_log(daemon, "keeps its previous configuration: 1 invalid entry")
    # a valid list applies: now the restart fails and STOPPED is sent
    daemon.plist.write_text(f"- process_name: '{standins.name(NOVA)}'\n"
                            f"  restart_command: {fail(log)}\n  notify_name: reloaded\n")
    daemon.signal(signal.SIGHUP)
    wait_log(daemon, "process list reloaded: 1 process(es)")
    wait_for(lambda: standins.pids(NOVA), 5, what="stand-in back")
    standins.kill(NOVA)
    rows = wait_notification(masakari_api, host, "STOPPED")
    assert rows[0]["payload"]["process_name"] == "reloaded"


def test_invalid_list_at_start_is_refused_with_the_line(tmp_path, masakari_api, host):
    from tests.helpers import BIN, write_conf
    import subprocess
    plist = tmp_path / "list.yaml"
    plist.write_text("- process_name: a\n  start_command: [\n")
    conf = write_conf(tmp_path / "m.conf", hostname=host, state_path=tmp_path,
                      endpoint=masakari_api.endpoint,
                      sections={"process": {"process_list_path": plist}})
    out = subprocess.run([str(BIN / "ha-processmonitor"), "--config-file", str(conf)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert f"{plist}:3: not valid YAML" in out.stderr


def test_in_a_network_namespace_falls_back_to_the_scan(tmp_path, standins):
    """Inside `ip netns add` the proc connector is refused: the daemon says so, still sees
    exits at once (pidfd) and finds restarted processes by the scan. (No API is reachable
    from the namespace; this test checks the restarts, the other tests the notifications.)"""
    import subprocess
    import uuid
    from tests.helpers import Daemon, write_conf
    from tests.processmonitor.conftest import write_list
    ns = f"pmtest-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    log = tmp_path / "stamps"
    standins.start(NOVA)
    plist = write_list(tmp_path / "list.yaml", [
        {"process_name": standins.name(NOVA),
         "restart_command": spawn(log, NOVA, standins, delay=0.3)}])
    conf = write_conf(tmp_path / "m.conf", hostname="netns-host", state_path=tmp_path,
                      endpoint=None, sections={"process": {"process_list_path": plist,
                                                           "check_interval": 1,
                                                           "restart_retries": 0}})
    daemon = Daemon("processmonitor", conf, argv_prefix=["ip", "netns", "exec", ns])
    try:
        daemon.start()
        assert "proc connector refused" in daemon.log_text()
        for round_ in (1, 2):
            old = standins.pids(NOVA)
            killed = time.time()
            standins.kill(NOVA)
            wait_for(lambda: [p for p in standins.pids(NOVA) if p not in old], 10,
                     what=f"restart {round_}")
            assert stamps(log, "start")[-1][1] - killed < 1.0
            wait_for(lambda: daemon.log_text().count("restarted (attempt 1 of 1)") == round_,
                     10, what=f"restart {round_} confirmed by the daemon")
    finally:
        daemon.stop()
        daemon.notify.close()
        subprocess.run(["ip", "netns", "delete", ns], check=False)
