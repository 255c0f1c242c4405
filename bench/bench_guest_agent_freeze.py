"""How fast ha-instancemonitor's guest-agent heartbeat reports a guest whose agent is silent.

A real QEMU/TCG guest (64 MiB, 1 vCPU, no OS, as tests/engine/test_instance_recovery.py)
with a guest-agent channel nobody answers (no guest OS: to libvirt the agent is "not
connected", what a dead qemu-ga looks like; the tests' silent agent), under a libvirtd with
the QEMU driver (tests/fixtures/libvirtd.py QemuLibvirtd), the real masakari-api, and
ha-instancemonitor as a process with `[instancemonitor] guest_agent_heartbeat = true`.
Each sample: a guest is started at a random phase of the heartbeat's rounds (t0: its
create() returned; its agent is silent from then on); *detected* = the API received its
QEMU_GUEST_AGENT_ERROR POST and answered 202 (the POST log of tests/fixtures). Run for
masakari-monitors' defaults (interval 10 s, timeout 2 s, threshold 3) and for a short
setting (1 s, 1 s, 3). The bound is the loop's (instancemonitor/guest_agent.py): it sleeps
``interval``, then one round pings all matching guests at once; the notification goes at
the ``threshold``-th failed round, so detection lies between (threshold - 1) x P and
threshold x P after t0, P = interval + one round's time (an agent that is not connected
fails at once; a connected agent of a frozen guest fails after ``timeout``, so P grows by
up to timeout). Writes docs/benchmarks.d/guest-agent-freeze.md.

    .venv/bin/python -m bench.bench_guest_agent_freeze [--samples 5]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.engine.test_instance_recovery import AGENT_GUEST  # noqa: E402
from tests.fixtures.libvirtd import QemuLibvirtd  # noqa: E402
from tests.fixtures.masakari_api import MasakariAPI  # noqa: E402
from tests.helpers import Daemon, write_conf  # noqa: E402
from bench import summary  # noqa: E402
from bench.stats import pct  # noqa: E402

OUT = ROOT / "docs/benchmarks.d/guest-agent-freeze.md"
EVENT = "QEMU_GUEST_AGENT_ERROR"
# (interval, timeout, threshold, seconds between the samples' starts): at the defaults the
# samples overlap (one start per 10 s period, each at a random phase of it), as the guests
# of one host share the rounds; at the short setting each is reported before the next.
SETTINGS = [(10, 2, 3, 10.0), (1, 1, 3, 6.0)]


def mm_design(interval: int, timeout: int, threshold: int) -> tuple[float, float]:
    """masakari-monitors' introspective monitor (qemu_utils.py), by design: rounds every
    ``interval`` s start to start (oslo.service FixedIntervalLoopingCall, first at once);
    a guest must first answer (state 'discovery' → 'healthy'); a failed ping moves it to
    'error' with failedCount 1, and a notification goes once failedCount > threshold is
    seen before counting, i.e. at the (threshold + 2)-th failed ping. A silenced agent at a
    random phase: (threshold + 1) x interval + U(0, interval); returns (mean, max) for an
    agent that fails at once (not connected); a hung one adds up to ``timeout``."""
    base = (threshold + 1) * interval
    return base + interval / 2, base + interval


def run(work: Path, api: MasakariAPI, lv: QemuLibvirtd, interval: int, timeout: int,
        threshold: int, gap: float, samples: int) -> dict:
    label = f"{interval}x{threshold}"
    host = f"bench-agent-{os.getpid()}-{label}"
    api.ensure_host(host)
    state = work / f"state-{label}"
    state.mkdir()
    conf = write_conf(work / f"{label}.conf", hostname=host, state_path=state,
                      endpoint=api.endpoint, sections={
                          "DEFAULT": {"debug": "false"},
                          "libvirt": {"connection_uri": lv.uri},
                          "instancemonitor": {"guest_agent_heartbeat": "true"},
                          "introspectiveinstancemonitor": {
                              "guest_monitoring_interval": interval,
                              "guest_monitoring_timeout": timeout,
                              "guest_monitoring_failure_threshold": threshold,
                              "qemu_guest_agent_sock_path": ".*"}})
    conn = lv.hold()
    doms = [conn.defineXML(AGENT_GUEST.format(name=f"gab-{label}-{i}-{os.getpid()}",
                                              uuid=uuidlib.uuid4()))
            for i in range(samples)]
    daemon = Daemon("instancemonitor", conf)
    daemon.start()
    started, create_s = {}, []
    try:
        base = time.time() + 1
        for i, dom in enumerate(doms):
            time.sleep(max(0.0, base + i * gap + random.uniform(0, interval) - time.time()))
            c0 = time.time()
            dom.create()
            started[dom.UUIDString()] = time.time()
            create_s.append(started[dom.UUIDString()] - c0)
        deadline = time.monotonic() + (interval + timeout + 2) * (threshold + 1) + 30
        while True:
            posts = [p for p in api.posts(hostname=host, settle=0.5)
                     if isinstance(p.payload, dict) and p.payload.get("event") == EVENT]
            got = {p.payload.get("instance_uuid"): p for p in posts if p.status == 202}
            if set(started) <= set(got) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        daemon.stop()
        daemon.notify.close()
        for dom in doms:
            try:
                if dom.isActive():
                    dom.destroy()
            finally:
                dom.undefine()
    detected = [got[u].at - t0 for u, t0 in started.items() if u in got]
    for u, t0 in started.items():
        print(f"  {label}: {u[:8]} " + (f"detected after {got[u].at - t0:.2f}s" if u in got
                                        else "never reported"), flush=True)
    return {"interval": interval, "timeout": timeout, "threshold": threshold, "gap": gap,
            "detected": detected, "missed": len(started) - len(detected),
            "posts": len(posts), "create": create_s}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=5)
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        work = Path(tmp)
        api = MasakariAPI(work / "api")
        api.start()
        lv = QemuLibvirtd(work / "libvirtd")
        lv.workdir.mkdir()
        lv.start()
        try:
            results = [run(work, api, lv, *s, args.samples) for s in SETTINGS]
        finally:
            lv.stop()
            api.stop()
    report(results, args, time.monotonic() - t_start)


def report(results, args, elapsed):
    lines = ["## instancemonitor: guest agent silent → QEMU_GUEST_AGENT_ERROR stored", "",
             f"`.venv/bin/python -m bench.bench_guest_agent_freeze --samples {args.samples}` "
             f"({dt.date.today().isoformat()}, {elapsed:.0f} s in all). Real QEMU/TCG "
             "guests (64 MiB, no OS) with a guest-agent channel nobody answers (the tests' "
             "silent agent: to libvirt it is not connected, what a dead qemu-ga looks like, "
             "so each ping fails at once), the real masakari-api, ha-instancemonitor with "
             "`[instancemonitor] guest_agent_heartbeat = true`. Each guest is started at a "
             "random phase of the heartbeat rounds (t0: `create()` returned); *detected*: "
             "the API received its QEMU_GUEST_AGENT_ERROR and answered 202. At the defaults "
             "the samples overlap (one start per 10 s, as the guests of one host share the "
             "rounds); at the short setting each is reported before the next starts.", "",
             "| interval / timeout / threshold | samples | detected p50 | min | max | "
             "expected (this silent agent) | POSTs | masakari-monitors, design |",
             "|---|---|---|---|---|---|---|---|"]
    rows = []
    for r in results:
        i, t, n, d = r["interval"], r["timeout"], r["threshold"], r["detected"]
        mean, worst = mm_design(i, t, n)
        p50 = f"{pct(d, 50):.2f} s" if d else "n/a"
        lo = f"{min(d):.2f} s" if d else "n/a"
        hi = f"{max(d):.2f} s" if d else "n/a"
        missed = f" ({r['missed']} never reported)" if r["missed"] else ""
        lines.append(f"| {i} s / {t} s / {n} | {len(d)}{missed} | {p50} | {lo} | {hi} | "
                     f"{(n - 1) * i}–{n * i} s + one round | {r['posts']} | "
                     f"{(n + 1) * i}–{worst:g} s, mean {mean:g} s (+ up to {t} s hung) |")
        rows.append(summary.row(
            f"guest agent silent → QEMU_GUEST_AGENT_ERROR stored (interval {i} s, timeout "
            f"{t} s, threshold {n}), p50 (masakari-monitors: its design at the same "
            f"settings, {n + 2}th failed ping of a once-answering agent, mean)",
            "s", round(pct(d, 50), 2) if d else None, mean))
    create = [c for r in results for c in r["create"]]
    lines += ["", "Expected from the loop (instancemonitor/guest_agent.py): it sleeps "
              "`guest_monitoring_interval`, then one round pings every matching guest at "
              "once; the notification goes at the `guest_monitoring_failure_threshold`-th "
              "failed round, so an agent silenced at a random phase is reported between "
              "(threshold − 1) × P and threshold × P later, P = interval + one round's time. "
              "An agent that is not connected (this bench, a dead qemu-ga) fails at once; a "
              "connected agent of a frozen guest fails after `guest_monitoring_timeout`, so "
              "P grows by up to the timeout (defaults: 26–38 s instead of 20–30 s; short "
              "setting: 5–7 s instead of 2–3 s), plus the POST. "
              f"`create()` of a guest took {pct(create, 50):.2f} s p50 here, and a round "
              "during it already counts: minima a little under the bound.", "",
              "masakari-monitors' introspective instance monitor polls the same way (every "
              "`guest_monitoring_interval` s start to start, one ping per guest with "
              "`guest_monitoring_timeout`, one guest after the other), with two differences "
              "in `qemu_utils.py`: a guest must first answer once (it starts in 'discovery', "
              "which a never-answering agent such as this bench's never leaves: "
              "masakari-monitors never reports it), and the notification goes at the "
              "(threshold + 2)-th failed ping (the first failure only moves 'healthy' to "
              "'error' with failedCount 1, and failedCount > threshold is tested before "
              "counting). Its design figure at its defaults (10 s, 2 s, 3): 40–50 s, mean "
              "45 s, for an agent that fails at once, up to 2 s more per round for a hung "
              "one. Not measured (it would never report this bench's guest)."]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    summary.record("guest-agent-freeze", "instancemonitor", rows)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
