"""The outbox's disk fails under a running ha-processmonitor: a real tmpfs that fills up,
a real ext4 that the kernel remounts read-only after an error. The detection waits in
memory, the daemon says why (status, STATUS=, the log at a limited rate), and the
notification reaches the real masakari-api once space returns."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time

import pytest

from tests.helpers import cli, wait_for
from tests.processmonitor.conftest import (fail, process_notifications, verdict,
                                           wait_notification)

NOVA = "fake-nova-compute"


@contextlib.contextmanager
def tmpfs(path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                    str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory) -> os.PathLike:
    """Fill the file system: a filler file grows until ENOSPC."""
    filler = directory / "filler"
    with open(filler, "wb") as f:
        chunk = b"\0" * 65536
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    with contextlib.suppress(OSError):  # the last pages too
        with open(filler, "ab") as f:
            while True:
                f.write(b"\0" * 512)
                f.flush()
    return filler


def status(conf):
    r = cli(conf, "status", "--daemon", "processmonitor")
    return r.returncode, r.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_disk_full_detection_held_then_delivered_when_space_returns(
        pm, standins, tmp_path, masakari_api, host):
    with tmpfs(tmp_path / f"state-{os.getpid()}", "3M") as state:
        standins.start(NOVA)
        from tests.fixtures.masakari_api import free_port
        from tests.monitors.test_metrics import scrape, value
        port = free_port()
        daemon = pm([{"process_name": standins.name(NOVA), "notify_name": "nova-compute",
                      "restart_command": fail(tmp_path / "stamps", "nova")}],
                    sections={"DEFAULT": {"state_path": state},
                              "metrics": {"bind": f"127.0.0.1:{port}"}})
        assert value(scrape(port), "ha_monitors_outbox_writable") == 1
        assert verdict(state, "nova-compute")["verdict"] == "running"
        daemon.notify.drain()
        filler = fill(state)
        standins.kill(NOVA, sig=signal.SIGTERM)  # restart fails -> STOPPED, outbox full
        wait_for(lambda: "outbox not writable: disk full on " + str(state)
                 in daemon.log_text(), 20, what="the cause in the log")
        # what the operator sees meanwhile: status CRITICAL naming the cause and what waits
        code, out = wait_for(lambda: (lambda r: r if "held in memory" in r[1] else None)(
            status(daemon.conf)), 15, what="status naming the held detection")
        assert code == 2, out
        assert f"outbox not writable: disk full on {state}" in out
        assert "1 detection(s) held in memory" in out
        status_msgs = [m["STATUS"] for m in daemon.notify.drain() if "STATUS" in m]
        assert any(f"DEGRADED: outbox not writable: disk full on {state}" in m
                   for m in status_msgs), status_msgs[-3:]
        assert process_notifications(masakari_api, host) == []
        samples = scrape(port)
        assert value(samples, "ha_monitors_outbox_writable") == 0
        assert value(samples, "ha_monitors_detections_held") == 1
        assert value(samples, "ha_monitors_events_detected_total", outcome="held") == 1
        # the journal is not flooded: one line, then a reminder a minute at most
        time.sleep(4)
        log = daemon.log_text()
        assert log.count("outbox not writable: disk full") <= 4, log[-3000:]
        assert log.count("delivery loop error") <= 1, log[-3000:]
        assert "could not queue" not in log
        # the verdict file never claims more than the outbox holds: no gave_up while the
        # STOPPED waits in memory
        assert verdict(state, "nova-compute")["verdict"] != "gave_up"
        os.unlink(filler)  # space returns: no restart, no operator action
        rows = wait_notification(masakari_api, host, "STOPPED")
        assert rows[0]["payload"] == {"event": "STOPPED", "process_name": "nova-compute"}
        wait_for(lambda: verdict(state, "nova-compute").get("notification") == 1, 5,
                 what="gave_up once durable, with the row's id")
        assert verdict(state, "nova-compute")["verdict"] == "gave_up"
        assert "outbox writable again" in daemon.log_text()
        wait_for(lambda: "outbox not writable" not in status(daemon.conf)[1], 15,
                 what="status recovers")
        assert value(scrape(port), "ha_monitors_detections_held") == 0
        r = cli(daemon.conf, "outbox", "show", "1", "--json")
        assert json.loads(r.stdout)["decision"]["held_in_memory_s"] > 3
        daemon.stop()


@contextlib.contextmanager
def ext4(path, size_mb: int = 16):
    """A real ext4 on a loop device that the kernel remounts read-only on an error."""
    path.mkdir(parents=True, exist_ok=True)
    image = path.with_suffix(".img")
    subprocess.run(["truncate", "-s", f"{size_mb}M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(path)],
                   check=True)
    device = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(path)], check=True,
                            capture_output=True, text=True).stdout.strip()
    os.chmod(path, 0o700)
    try:
        yield path, device
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        subprocess.run(["losetup", "-d", device], check=False, capture_output=True)
        image.unlink(missing_ok=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")
def test_read_only_remount_is_named_and_the_held_detection_is_not_silently_lost(
        pm, standins, tmp_path, masakari_api, host):
    """ext4 errors=remount-ro after a real (triggered) file-system error: /proc/mounts still
    says rw (emergency_ro), every write fails EROFS. Nothing can be written on that disk, so
    the cause goes out through STATUS= and the log; the held detection is logged in full when
    the daemon stops, for a replay."""
    with ext4(tmp_path / f"ro-{os.getpid()}") as (state, device):
        standins.start(NOVA)
        daemon = pm([{"process_name": standins.name(NOVA), "notify_name": "nova-compute",
                      "restart_command": fail(tmp_path / "stamps", "nova")}],
                    sections={"DEFAULT": {"state_path": state}})
        with open(f"/sys/fs/ext4/{os.path.basename(device)}/trigger_fs_error", "w") as f:
            f.write("1")
        wait_for(lambda: "emergency_ro" in open("/proc/mounts").read(), 10,
                 what="the kernel's read-only remount")
        daemon.notify.drain()
        standins.kill(NOVA, sig=signal.SIGTERM)
        wait_for(lambda: "outbox not writable: read-only file system on " + str(state)
                 in daemon.log_text(), 20, what="the cause in the log")

        def degraded():
            return next((m["STATUS"] for m in daemon.notify.drain()
                         if "read-only file system" in m.get("STATUS", "")), None)
        line = wait_for(degraded, 15, what="STATUS= naming the read-only outbox")
        assert "DEGRADED: outbox not writable: read-only file system" in line
        assert "1 detection(s) held in memory" in line
        r = cli(daemon.conf, "status", "--daemon", "processmonitor", "--stale-after", "1")
        assert r.returncode == 2, r.stdout  # the status file cannot be updated: stale
        assert f"outbox not writable: read-only file system on {state}" in r.stdout
        assert daemon.proc.poll() is None
        daemon.signal(signal.SIGTERM)
        daemon.proc.wait(20)
        log = daemon.log_text()
        assert "stopping with a detection the outbox never took" in log
        assert "'process_name': 'nova-compute'" in log.split("never took", 1)[1]
        assert process_notifications(masakari_api, host) == []
