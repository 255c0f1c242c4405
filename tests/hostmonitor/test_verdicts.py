"""This host's own verdict is never host_status NORMAL, and the compute column follows
ha-processmonitor. Real ha-hostmonitor (and ha-processmonitor) in a network namespace,
the real masakari-api, real processes. The fencing command is a recording stand-in
(tests/hostmonitor/bin/record-fence): a live fencing cluster is another test's job."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import Daemon, cli, wait_for
from tests.hostmonitor.test_links import STARTED, STOPPED, payloads, start, wait_payloads
from tests.hostmonitor.test_operator import Receiver, webhook  # noqa: F401 - fixture

HERE = Path(__file__).parent
RECORDER = HERE / "bin" / "record-fence"
STANDIN = HERE.parent / "processmonitor" / "bin" / "fake-nova-compute"
SPAWN = HERE.parent / "processmonitor" / "bin" / "spawn"
FAIL = HERE.parent / "processmonitor" / "bin" / "fail"


def no_normal(topo, host):
    """The API never got a STOPPED with host_status NORMAL for this host."""
    return not any(p["event"] == "STOPPED" and p.get("host_status") == "NORMAL"
                   for p in payloads(topo, host))


@pytest.mark.slow
def test_unfit_with_pacemaker_fencing_requests_stonith_admin_and_never_says_normal(
        links_up, tmp_path):
    topo = links_up
    host = topo.new_host()
    record = tmp_path / "fence.jsonl"
    d = start(topo, tmp_path, host, fencing="pacemaker", fence_timeout=60,
              sections={"hostmonitor_peers": {
                  "stonith_admin_command": f"{RECORDER} {record}"},
                  "host": {"monitoring_samples": 1, "monitoring_driver": "none"}})
    try:
        topo.admin("t0", "down")
        topo.admin("t1", "down")
        wait_payloads(topo, host, [STOPPED])
        wait_for(lambda: record.exists() and record.read_text(), 10, what="fence request")
        assert [json.loads(x) for x in record.read_text().splitlines()] == \
            [["--fence", host, "--timeout", "60"]]
        wait_for(lambda: "fencing of this host requested (pacemaker)" in d.log_text(), 5,
                 what="fencing logged")
        time.sleep(1.0)
        assert payloads(topo, host) == [STOPPED] and no_normal(topo, host)
        # history: the decision names the fencing plan, the fencing request's outcome
        r = cli(d.conf, "history", "--json", "--host", host)
        row = json.loads(r.stdout)[0]
        assert row["decision"]["fencing"]["method"] == "pacemaker"
        fence = [h for h in row["history"] if h["kind"] == "fencing"]
        assert fence and fence[0]["ok"] is True
        assert fence[0]["action"] == f"{RECORDER} {record} --fence {host} --timeout 60"
        text = cli(d.conf, "history", "--host", host).stdout
        assert f"fencing (pacemaker) requested: {RECORDER} {record} --fence {host}" in text
        # the request is a one-shot job: once it ended the source is still healthy
        status = wait_for(lambda: (r := cli(d.conf, "status")).stdout.count(
            "fencing pacemaker requested") and r, 15, what="status after the fencing")
        assert status.returncode == 0 and "thread(s) died" not in status.stdout, status.stdout
    finally:
        d.stop()


@pytest.mark.slow
def test_unfit_without_fencing_is_unknown_to_masakari_and_the_operator(
        links_up, tmp_path, webhook):  # noqa: F811
    topo = links_up
    url, received = webhook
    host = topo.new_host()
    d = start(topo, tmp_path, host, operator_driver="webhook",
              sections={"delivery": {"drivers": "masakari,webhook"},
                        "webhook": {"url": url}})
    try:
        topo.carrier("s0", "down")
        topo.carrier("s1", "down")
        wait_payloads(topo, host, [STOPPED])
        # (the webhook first got the "degraded" notice of one port: ONLINE/UNKNOWN)
        wait_for(lambda: any(r["payload"]["payload"] == STOPPED for r in received), 10,
                 what="the verdict at the operator webhook")
        assert "no fencing is configured ([hostmonitor] fencing = none)" in d.log_text()
        assert "operator action needed" in d.log_text()
        assert no_normal(topo, host)
    finally:
        d.stop()


# -- the compute column ------------------------------------------------------------------
class Compute:
    """A stand-in compute service with a name unique to this test (no other test's
    stand-in matches it), started detached as a service manager would."""

    def __init__(self, tmp_path: Path):
        self.name = f"nc-{os.getpid()}-{tmp_path.name[-12:]}".replace("_", "-")
        self.path = tmp_path / self.name
        shutil.copy(STANDIN, self.path)
        self.path.chmod(0o755)

    def pids(self) -> list[int]:
        out = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    line = f.read().split(b"\0")
                with open(f"/proc/{entry}/stat", "rb") as f:
                    zombie = f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
            except OSError:
                continue
            if str(self.path).encode() in line[:2] and not zombie:
                out.append(int(entry))
        return out

    def start(self) -> None:
        subprocess.Popen([str(self.path)], start_new_session=True, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.pids, 10, what=f"{self.name} running")

    def kill(self) -> None:
        for pid in self.pids():
            os.kill(pid, signal.SIGKILL)

    def cleanup(self) -> None:
        self.kill()


@pytest.fixture
def compute(tmp_path):
    c = Compute(tmp_path)
    yield c
    c.cleanup()


def processmonitor(topo, hm_daemon, tmp_path, compute, restart_command):
    """ha-processmonitor in the same namespace and outbox as the hostmonitor (same
    configuration file), watching the stand-in; PROCESS notifications name it
    notify_name = the compute process name hostmonitor knows."""
    plist = tmp_path / "process_list.yaml"
    plist.write_text(yaml.safe_dump([{
        "process_name": str(compute.path), "notify_name": compute.name,
        "restart_command": restart_command, "run_as_root": False}], sort_keys=False))
    with open(hm_daemon.conf, "a") as f:
        f.write(f"\n[process]\nprocess_list_path = {plist}\ncheck_interval = 1\n"
                "restart_retries = 0\nrestart_interval = 0\n"
                "[processmonitor]\ncommand_timeout = 10\nrestart_grace = 2\n")
    return Daemon("processmonitor", hm_daemon.conf, argv_prefix=topo.d.prefix(),
                  log=tmp_path / "pm.log").start()


@pytest.mark.slow
def test_started_before_compute_services_sends_nothing(links_up, tmp_path, compute):
    """Boot order / package upgrade: nova-compute not running yet when hostmonitor starts.
    Never seen running since start = not a failure. Once seen running, gone longer than
    compute_restart_window (the safety net without processmonitor) = down."""
    topo = links_up
    host = topo.new_host()
    d = start(topo, tmp_path, host, compute_processes=compute.name,
              compute_restart_window=3)
    try:
        time.sleep(5)  # ten evaluations, longer than the restart window
        assert payloads(topo, host) == []
        compute.start()
        time.sleep(1.5)
        assert payloads(topo, host) == []
        compute.kill()  # nobody restarts it: after the window, the verdict
        t0 = time.monotonic()
        wait_payloads(topo, host, [STOPPED], timeout=15)
        assert time.monotonic() - t0 >= 3
        r = cli(d.conf, "history", "--json", "--host", host)
        decision = json.loads(r.stdout)[0]["decision"]
        assert decision["row"]["compute"] == "down"
        assert decision["compute"]["gone_longer_than_restart_window"] == [compute.name]
    finally:
        d.stop()


@pytest.mark.slow
def test_compute_restart_by_processmonitor_sends_nothing(links_up, tmp_path, compute):
    """nova-compute dies and processmonitor restarts it (3 s): no host verdict, no PROCESS
    notification; hostmonitor waits for processmonitor instead of judging by a scan."""
    topo = links_up
    host = topo.new_host()
    stamps = tmp_path / "stamps"
    compute.start()
    d = start(topo, tmp_path, host, compute_processes=compute.name)  # window: 300 s
    pm = processmonitor(topo, d, tmp_path, compute, f"{SPAWN} {stamps} 3 {compute.path}")
    try:
        time.sleep(1.5)  # both saw it running
        first = compute.pids()
        compute.kill()
        wait_for(lambda: compute.pids() and compute.pids() != first, 20,
                 what="restarted by processmonitor")
        # processmonitor says so once it has seen the new process run (later under load)
        wait_for(lambda: "restarted (attempt 1 of 1)" in pm.log_text(), 20,
                 what="processmonitor's 'restarted' line")
        time.sleep(3)
        assert payloads(topo, host) == []
        assert topo.notifications(host, type="PROCESS") == []
    finally:
        pm.stop()
        d.stop()


@pytest.mark.slow
def test_processmonitor_gave_up_means_compute_down(links_up, tmp_path, compute):
    """Every restart failed: processmonitor's PROCESS STOPPED (in the shared outbox) is
    the compute column's verdict, long before any restart window."""
    topo = links_up
    host = topo.new_host()
    compute.start()
    d = start(topo, tmp_path, host, compute_processes=compute.name)  # window: 300 s
    pm = processmonitor(topo, d, tmp_path, compute, f"{FAIL} {tmp_path / 'stamps'} nova")
    try:
        time.sleep(1.5)
        compute.kill()
        wait_payloads(topo, host, [STOPPED], timeout=30)
        procs = [n["payload"] for n in topo.notifications(host, type="PROCESS")]
        assert procs == [{"event": "STOPPED", "process_name": compute.name}]
        r = cli(d.conf, "history", "--json", "--host", host, "--type", "COMPUTE_HOST")
        decision = json.loads(r.stdout)[0]["decision"]
        assert decision["row"]["compute"] == "down"
        assert list(decision["compute"]["processmonitor_gave_up"]) == [compute.name]
        assert no_normal(topo, host)
    finally:
        pm.stop()
        d.stop()


@pytest.mark.slow
def test_processmonitor_verdict_file_drives_the_compute_column(links_up, tmp_path, compute):
    """processmonitor's verdict file (written here with monitors/process_verdicts.py, as
    ha-processmonitor writes it once its PROCESS STOPPED is durable) is what the compute
    column follows: the process gone and processmonitor restarting it → nothing; gave_up →
    this host's verdict (UNKNOWN), long before the restart window; running again →
    STARTED."""
    from monitors import process_verdicts

    topo = links_up
    host = topo.new_host()
    compute.start()
    d = start(topo, tmp_path, host, compute_processes=compute.name)  # window: 300 s
    try:
        time.sleep(1.5)
        assert payloads(topo, host) == []
        compute.kill()
        process_verdicts.write(str(tmp_path), compute.name, process_verdicts.RESTARTING)
        time.sleep(1.5)  # processmonitor is handling it: not a host failure
        assert payloads(topo, host) == []
        process_verdicts.write(str(tmp_path), compute.name, process_verdicts.GAVE_UP, 42)
        wait_payloads(topo, host, [STOPPED])
        r = cli(d.conf, "history", "--json", "--host", host, "--type", "COMPUTE_HOST")
        decision = json.loads(r.stdout)[0]["decision"]
        assert decision["row"]["compute"] == "down"
        assert decision["compute"]["processmonitor_gave_up"] == {compute.name: "notification 42"}
        compute.start()
        process_verdicts.write(str(tmp_path), compute.name, process_verdicts.RUNNING)
        wait_payloads(topo, host, [STOPPED, STARTED])
        assert no_normal(topo, host)
    finally:
        d.stop()


def test_an_unreadable_verdict_file_is_no_verdict(tmp_path, caplog):
    """A broken verdict file never makes this host unfit; it is named in the log."""
    from monitors import process_verdicts

    from hostmonitor.compute import ComputeColumn

    name = f"nc-absent-{os.getpid()}"
    process_verdicts.write(str(tmp_path), name, process_verdicts.GAVE_UP, 7)
    column = ComputeColumn()
    state, evidence = column.state([name], 300, str(tmp_path))
    assert (state, evidence["processmonitor_gave_up"]) == ("down", {name: "notification 7"})
    process_verdicts.write(str(tmp_path), name, process_verdicts.RUNNING)
    assert column.state([name], 300, str(tmp_path)) == (
        "up", {"never_seen_running_since_start": [name]})
    Path(process_verdicts.path(str(tmp_path))).write_text("{not json")
    assert column.state([name], 300, str(tmp_path))[0] == "up"
    assert process_verdicts.path(str(tmp_path)) in caplog.text


def test_a_gave_up_beside_a_running_process_is_stale(tmp_path):
    """The verdict file outlived its writer (processmonitor stopped before it saw the
    process again): a gave_up never makes this host unfit while the process runs; once the
    process is gone it counts again."""
    import shutil
    import subprocess

    from monitors import process_verdicts

    from hostmonitor.compute import ComputeColumn

    name = f"nc-stale-{os.getpid()}"
    binary = tmp_path / name
    shutil.copy("/bin/sleep", binary)
    proc = subprocess.Popen([str(binary), "60"])
    try:
        process_verdicts.write(str(tmp_path), name, process_verdicts.GAVE_UP, 9)
        column = ComputeColumn()
        assert column.state([name], 300, str(tmp_path)) == (
            "up", {"processmonitor_gave_up_but_running": [name]})
    finally:
        proc.kill()
        proc.wait()
    state, evidence = column.state([name], 300, str(tmp_path))
    assert (state, evidence["processmonitor_gave_up"]) == ("down", {name: "notification 9"})


def test_check_config_refuses_etcd_fencing_without_a_self_fence_action(tmp_path):
    from tests.helpers import write_conf

    conf = write_conf(tmp_path / "hm.conf", hostname="x", state_path=tmp_path, endpoint=None,
                      sections={"hostmonitor": {"fencing": "etcd"}})
    r = cli(conf, "check-config")
    assert r.returncode != 0
    assert ("[hostmonitor] fencing = etcd needs self_fence_command or self_fence_file"
            in r.stdout + r.stderr)
