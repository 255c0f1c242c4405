"""How fast ha-instancemonitor sees a libvirtd that is alive but not answering.

A real libvirtd (test driver over its unix socket) with three running domains, the real
masakari-api, ha-instancemonitor as a process. Each sample: SIGSTOP the libvirtd's process
group (t0); *detected* = the daemon's log line "libvirtd hung: ..." (the journal's
LIBVIRT_STATE=hung entry; the status file says the same within one status round); then
SIGCONT (t1); *reconciled* = the next "reconciled N domains" line, i.e. reconnected and
the domains compared with their last known states. Run for the default keepalive (5 s x
3) and for a tight one (1 s x 2). The bound is keepalive's: libvirt pings after
``keepalive_interval`` seconds of silence and closes after ``keepalive_count`` unanswered
pings, so detection lands between interval x count and interval x (count + 1).
Writes docs/benchmarks.d/libvirtd-hang.md.

    .venv/bin/python -m bench.bench_libvirtd_hang [--samples 5]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.libvirtd import Libvirtd  # noqa: E402
from tests.fixtures.masakari_api import MasakariAPI  # noqa: E402
from tests.helpers import Daemon, write_conf  # noqa: E402
from bench import summary  # noqa: E402
from bench.stats import pct  # noqa: E402

OUT = ROOT / "docs/benchmarks.d/libvirtd-hang.md"
HUNG, RECONCILED = "libvirtd hung: ", "reconciled "


class LogWatch:
    """Counts a phrase in a growing log file, reading only what was appended."""

    def __init__(self, path: Path):
        self.path, self.offset, self.text = path, 0, ""

    def count(self, phrase: str) -> int:
        with open(self.path, errors="replace") as f:
            f.seek(self.offset)
            self.text += f.read()
            self.offset = f.tell()
        return self.text.count(phrase)

    def wait_more(self, phrase: str, than: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while self.count(phrase) <= than:
            if time.monotonic() > deadline:
                raise SystemExit(f"no new {phrase!r} within {timeout}s:\n{self.text[-2000:]}")
            time.sleep(0.005)
        return time.monotonic()


def run(work: Path, api: MasakariAPI, interval: int, count: int, samples: int) -> dict:
    lv = Libvirtd(work / f"libvirtd-{interval}x{count}")
    lv.workdir.mkdir()
    lv.start()
    lv.hold()
    for i in range(3):
        lv.create(f"hang-{interval}x{count}-{i}")
    host = f"bench-hang-{os.getpid()}-{interval}x{count}"
    api.ensure_host(host)
    state = work / f"state-{interval}x{count}"
    state.mkdir()
    conf = write_conf(work / f"{interval}x{count}.conf", hostname=host, state_path=state,
                      endpoint=api.endpoint, sections={
                          "DEFAULT": {"debug": "false"},
                          "libvirt": {"connection_uri": lv.uri},
                          "instancemonitor": {"keepalive_interval": interval,
                                              "keepalive_count": count,
                                              "reconnect_initial_interval": 0.1,
                                              "reconnect_max_interval": 0.5}})
    daemon = Daemon("instancemonitor", conf)
    daemon.start()
    watch = LogWatch(daemon.log)
    detected, reconciled = [], []
    try:
        watch.wait_more(RECONCILED, 0, 10)
        for _ in range(samples):
            hung, rec = watch.count(HUNG), watch.count(RECONCILED)
            time.sleep(interval + 0.5)  # a quiet connection, as between events
            t0 = time.monotonic()
            os.killpg(lv.proc.pid, signal.SIGSTOP)
            try:
                t = watch.wait_more(HUNG, hung, interval * (count + 2) + 10)
            finally:
                os.killpg(lv.proc.pid, signal.SIGCONT)
            t1 = time.monotonic()
            detected.append(t - t0)
            reconciled.append(watch.wait_more(RECONCILED, rec, 20) - t1)
            print(f"  {interval}s x {count}: detected after {detected[-1]:.2f}s, "
                  f"reconciled {reconciled[-1] * 1000:.0f} ms after SIGCONT", flush=True)
    finally:
        daemon.stop()
        daemon.notify.close()
        lv.stop()
    return {"interval": interval, "count": count, "detected": detected,
            "reconciled": reconciled}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-hang-") as tmp:
        work = Path(tmp)
        api = MasakariAPI(work / "api")
        api.start()
        try:
            results = [run(work, api, 5, 3, args.samples), run(work, api, 1, 2, args.samples)]
        finally:
            api.stop()
    report(results, args)


def report(results, args):
    lines = ["## instancemonitor: libvirtd hung (SIGSTOP) → detected", "",
             f"`.venv/bin/python -m bench.bench_libvirtd_hang --samples {args.samples}` "
             f"({dt.date.today().isoformat()}). libvirtd (test driver, 3 domains) "
             "SIGSTOPped after interval + 0.5 s without events; *detected*: the daemon's "
             "`libvirtd hung:` line (journal LIBVIRT_STATE=hung); then SIGCONT; "
             "*reconciled*: reconnected and the domains compared with their last known states.", "",
             "| keepalive | samples | detected p50 | min | max | reconciled after SIGCONT "
             "p50 | max |", "|---|---|---|---|---|---|---|"]
    rows = []
    for r in results:
        d, c = r["detected"], r["reconciled"]
        lines.append(f"| {r['interval']} s × {r['count']} | {len(d)} | {pct(d, 50):.2f} s | "
                     f"{min(d):.2f} s | {max(d):.2f} s | {pct(c, 50) * 1000:.0f} ms | "
                     f"{max(c) * 1000:.0f} ms |")
        rows.append(summary.row(
            f"libvirtd hung → detected (keepalive {r['interval']} s × {r['count']}), p50",
            "s", round(pct(d, 50), 2), None,
            "masakari-monitors (not measured): the same keepalive, fixed at 5 s × 3; "
            "logs the closed connection, reconnects, no hang state, no reconcile"))
    lines += ["", "Detection is keepalive's bound by design (libvirt closes the connection "
              "after `keepalive_count` unanswered pings sent `keepalive_interval` apart, "
              "the first after that much silence, and libvirtd's own pings to the client "
              "count as traffic), so it lands between interval × count and interval × "
              "(count + 1); lower it with the two options, at the price of a busy libvirtd "
              "being called hung sooner."]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    summary.record("libvirtd-hang", "instancemonitor", rows)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
