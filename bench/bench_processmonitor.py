"""ha-processmonitor vs masakari-monitors' processmonitor, side by side, one run.

Same machine, same real masakari-api, same process list shape (20 stand-in processes,
check_interval 5, restart_retries 0, restart_interval 5, restart command = a script that
records when it ran and fails). Measured for each daemon:
  * idle CPU (% of one core) and RSS of the daemon's process tree over --idle seconds;
  * kill -9 of one watched process → restart command started (the script's timestamp);
  * kill -9 → PROCESS STOPPED stored by the API (polled every 20 ms),
each process killed once (a random 0–1 s pause between kills), p50/p99.
Writes docs/benchmarks.d/processmonitor.md.

    .venv/bin/python -m bench.bench_processmonitor [--idle 60] [--processes 20]
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.masakari_api import MasakariAPI  # noqa: E402
from tests.helpers import NotifySocket, write_conf  # noqa: E402
from bench import summary  # noqa: E402
from bench.stats import pct  # noqa: E402

STANDIN = ROOT / "tests/processmonitor/bin/fake-nova-compute"
FAIL = ROOT / "tests/processmonitor/bin/fail"
MM_VENV = Path(os.environ.get("MM_VENV", ROOT / ".venv-mm"))
OUT = ROOT / "docs/benchmarks.d/processmonitor.md"


def tree(pid):
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pid):
    total = 0.0
    for p in tree(pid):
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def rss_mib(pid):
    total = 0
    for p in tree(pid):
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


class Run:
    """One daemon watching its own set of stand-ins."""

    def __init__(self, label, work: Path, api: MasakariAPI, hostname: str, n: int):
        self.label, self.work, self.api, self.hostname, self.n = label, work, api, hostname, n
        self.tag = f"{label}{uuid.uuid4().hex[:6]}"
        self.stamp = work / "restarts"
        self.names = [f"fake-nova-compute {self.tag}-{i:02d}." for i in range(n)]
        self.standins: dict[str, subprocess.Popen] = {}
        self.proc: subprocess.Popen | None = None

    def process_list(self) -> Path:
        path = self.work / "process_list.yaml"
        entries = [{"process_name": name, "start_command": "/bin/true",
                    "pre_start_command": None, "post_start_command": None,
                    "restart_command": f"{FAIL} {self.stamp} {name.split()[1]}",
                    "pre_restart_command": None, "post_restart_command": None,
                    "run_as_root": False} for name in self.names]
        path.write_text(yaml.safe_dump(entries, sort_keys=False))
        return path

    def start_standins(self):
        for name in self.names:
            self.standins[name] = subprocess.Popen(
                [str(STANDIN), name.split()[1]], start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self):
        raise NotImplementedError

    def stop(self):
        if self.proc and self.proc.poll() is None:
            for p in reversed(tree(self.proc.pid)[1:]):
                try:
                    p.terminate()
                except psutil.NoSuchProcess:
                    pass
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for proc in self.standins.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def idle(self, seconds: float) -> tuple[float, float]:
        time.sleep(3)  # settle after start-up
        c0, t0 = cpu_seconds(self.proc.pid), time.monotonic()
        rss = []
        while time.monotonic() - t0 < seconds:
            time.sleep(1)
            rss.append(rss_mib(self.proc.pid))
        cpu = (cpu_seconds(self.proc.pid) - c0) / (time.monotonic() - t0) * 100
        return cpu, max(rss)

    def restart_time(self, name) -> float | None:
        if not self.stamp.exists():
            return None
        tag = name.split()[1]
        for line in self.stamp.read_text().splitlines():
            _k, t, what = line.split(" ", 2)
            if what == tag:
                return float(t)
        return None

    def stopped_count(self, name) -> int:
        return sum(1 for r in self.api.notifications(type="PROCESS")
                   if r["payload"].get("process_name") == name
                   and r["payload"].get("event") == "STOPPED")

    def kills(self, count: int, timeout: float = 20.0) -> tuple[list[float], list[float], int]:
        to_restart, to_stored, missed = [], [], 0
        for name in self.names[:count]:
            time.sleep(random.uniform(0, self.pause))
            killed = time.time()
            os.kill(self.standins[name].pid, signal.SIGKILL)
            self.standins[name].wait()
            stored = None
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.stopped_count(name):
                    stored = time.time()
                    break
                time.sleep(0.02)
            restarted = self.restart_time(name)
            if stored is None or restarted is None:
                missed += 1
                continue
            to_restart.append(restarted - killed)
            to_stored.append(stored - killed)
        return to_restart, to_stored, missed


class Ours(Run):
    pause = 1.0

    def start(self):
        conf = write_conf(self.work / "monitors.conf", hostname=self.hostname,
                          state_path=self.work, endpoint=self.api.endpoint,
                          sections={"process": {"process_list_path": self.process_list(),
                                                "check_interval": 5, "restart_retries": 0,
                                                "restart_interval": 5}})
        # the daemon's defaults, not the tests' short delivery intervals
        text = conf.read_text().replace("debug = true", "debug = false")
        head, _, rest = text.partition("[delivery]")
        conf.write_text(head + rest[rest.find("\n["):])
        self.notify = NotifySocket()
        self.log = open(self.work / "daemon.log", "ab")
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv/bin/ha-processmonitor"), "--config-file", str(conf)],
            env={**os.environ, "NOTIFY_SOCKET": self.notify.path},
            stdout=self.log, stderr=subprocess.STDOUT)
        self.notify.wait_for("READY", 30)


class Theirs(Run):
    pause = 5.0  # one check_interval: kills land at a random phase of its polling loop

    def start(self):
        conf = self.work / "masakarimonitors.conf"
        conf.write_text(f"""[DEFAULT]
debug = false
log_file = {self.work / 'daemon.log'}
[api]
auth_type = password
auth_url = {self.api.stub.auth_url}
username = masakari
password = stub
project_name = service
user_domain_id = default
project_domain_id = default
region = RegionOne
api_interface = public
[process]
process_list_path = {self.process_list()}
check_interval = 5
restart_retries = 0
restart_interval = 5
""")
        self.proc = subprocess.Popen(
            [str(MM_VENV / "bin/masakari-processmonitor"), "--config-file", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = self.work / "daemon.log"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # it has no readiness signal: wait for its loop
            if log.exists() and log.read_text().count("Start of process") >= self.n:
                break
            time.sleep(0.2)
        time.sleep(1)


def measure(cls, label, api, hostname, n, idle, kills):
    work = Path(tempfile.mkdtemp(prefix=f"bench-pm-{label}-"))
    run = cls(label, work, api, hostname, n)
    run.start_standins()
    time.sleep(1)
    try:
        run.start()
        cpu, rss = run.idle(idle)
        to_restart, to_stored, missed = run.kills(kills)
    finally:
        run.stop()
    return {"cpu": cpu, "rss": rss, "restart": to_restart, "stored": to_stored,
            "missed": missed, "work": work}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--processes", type=int, default=20)
    parser.add_argument("--kills", type=int, default=20,
                        help="processes killed under ha-processmonitor")
    parser.add_argument("--mm-kills", type=int, default=10,
                        help="processes killed under masakari-processmonitor (~10 s each)")
    args = parser.parse_args(argv)
    hostname = socket.gethostname()  # masakari-monitors can only send this name
    with tempfile.TemporaryDirectory(prefix="bench-pm-api-") as api_dir:
        api = MasakariAPI(api_dir).start()
        try:
            api.ensure_host(hostname)
            ours = measure(Ours, "ours", api, hostname, args.processes, args.idle, args.kills)
            theirs = measure(Theirs, "mm", api, hostname, args.processes, args.idle,
                             args.mm_kills)
        finally:
            api.stop()
    write_report(args, ours, theirs)
    return 0


def fmt_ms(values, q):
    return f"{pct(values, q) * 1000:.1f} ms" if values else "n/a"


def write_report(args, ours, theirs):
    rows = []
    for what, key in (("kill -9 → restart command started", "restart"),
                      ("kill -9 → PROCESS STOPPED stored by the API", "stored")):
        for q in (50, 99):
            a, b = pct(ours[key], q), pct(theirs[key], q)
            rows.append(f"| {what}, p{q} | {fmt_ms(ours[key], q)} | {fmt_ms(theirs[key], q)} "
                        f"| {b / a:.0f}× |")
    rows.append(f"| idle CPU, {args.processes} watched processes, {args.idle:g} s | "
                f"{ours['cpu']:.2f} % of a core | {theirs['cpu']:.2f} % of a core | "
                f"{theirs['cpu'] / max(ours['cpu'], 1e-6):.0f}× |")
    rows.append(f"| peak RSS while idle (process tree) | {ours['rss']:.1f} MiB | "
                f"{theirs['rss']:.1f} MiB | {theirs['rss'] / ours['rss']:.1f}× |")
    text = f"""## processmonitor: ha-processmonitor vs masakari-processmonitor 22.0.0

Same run, same machine (2 cores), same real masakari-api; {args.processes} stand-in
processes per daemon; {len(ours['stored'])} (ours) and {len(theirs['stored'])} (theirs) of them
killed once each with SIGKILL, one at a time, after the previous STOPPED was stored
(random pause before each kill: 0–1 s for ours, 0–5 s = one check_interval for
masakari-monitors so kills land at a random phase of its polling loop; p99 of so few
samples is close to the maximum);
`[process] check_interval = 5, restart_retries = 0, restart_interval = 5`; the restart
command records its start time and fails, so every kill ends in a STOPPED notification.
Kills never reported: {ours['missed']} (ours) / {theirs['missed']} (theirs).

| measure | ha-processmonitor | masakari-processmonitor | ratio |
|---|---|---|---|
{chr(10).join(rows)}

Why: ours learns of the exit from a pidfd in the epoll loop (sub-millisecond) and sends
STOPPED as soon as the last attempt failed; masakari-monitors finds it in its next
`ps -ef` pass (every check_interval, one `ps -ef` per watched process), then sleeps
restart_interval after the failed attempt before sending. The STOPPED latency includes
the API's own POST and our delivery worker's hand-off from the outbox.

Reproduce (~5 min): `.venv/bin/python -m bench.bench_processmonitor --idle {args.idle:g} --processes {args.processes} --kills {args.kills} --mm-kills {args.mm_kills}`
"""
    summary.record("processmonitor", "processmonitor", [
        summary.row("kill -9 → restart command started, p50", "ms",
                    pct(ours["restart"], 50) * 1000, pct(theirs["restart"], 50) * 1000),
        summary.row("kill -9 → PROCESS STOPPED stored, p50", "ms",
                    pct(ours["stored"], 50) * 1000, pct(theirs["stored"], 50) * 1000),
        summary.row(f"idle CPU, {args.processes} processes", "% core", ours["cpu"], theirs["cpu"]),
        summary.row("idle RSS", "MiB", ours["rss"], theirs["rss"])])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
