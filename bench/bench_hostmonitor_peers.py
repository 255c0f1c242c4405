"""Benchmark: peer failure → COMPUTE_HOST notification stored by the real masakari-api.

Run: .venv/bin/python -m bench.bench_hostmonitor_peers [--runs N] [--sim-hosts N]

- Pacemaker alert path: ha-pacemaker-alert called with the fencing event's CRM_alert_*
  environment (as Pacemaker does) → stored. The running daemon's delivery worker picks the
  row up on its safety-net poll ([delivery] idle_poll_interval, pinned at 1 s here; default 0.25 s).
- Poll driver, per [host] monitoring_interval: the CIB file (real crm_mon, CIB_file) turns
  the peer offline at a random phase of the poll → stored.
- etcd, per lease TTL: a real 3-member cluster in network namespaces, one hostmonitor per
  namespace; a member's link goes down → stored.
- Live Pacemaker cluster (tests/fixtures/pacemaker_cluster.py: 3 nodes, corosync 3 knet,
  token 1000 ms, a lab fence agent that kills the node's stack): a node's stack SIGKILLed →
  STOPPED/NORMAL stored, once through the poll driver (monitoring_interval 1 s), once through
  the alert agent run by Pacemaker as hacluster; also the time corosync/Pacemaker take to
  see the node lost and to fence it, and formation.
- masakari-monitors' pacemaker driver cannot run here (it needs systemd, corosync and
  tcpdump on a live cluster): its figure is its design, uniform(0, 60 s) phase + one poll,
  and its first observation is a silent baseline (a host down at start is never reported).
- Simulation: 3 real hostmonitors + N simulated members (lease-backed keys refreshed like a
  hostmonitor does) on the etcd cluster: etcd load (Raft proposals/s, etcd CPU) and the
  number of notifications per failure (masakari-monitors: every node reports, N−1).
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import etcd3gw  # noqa: E402
import psutil  # noqa: E402

from tests.fixtures.cib import Cib  # noqa: E402
from tests.fixtures.etcd_cluster import EtcdCluster  # noqa: E402
from tests.fixtures.pacemaker_cluster import PacemakerCluster  # noqa: E402
from tests.fixtures.masakari_api import MasakariAPI  # noqa: E402
from tests.helpers import BIN, wait_for, write_conf  # noqa: E402
from tests.hostmonitor.peers.helpers import PeerDaemon, outbox_rows  # noqa: E402
from bench import summary  # noqa: E402
from bench.stats import pct  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FRAGMENT = ROOT / "docs/benchmarks.d/hostmonitor-peers.md"
DELIVERY = {"idle_poll_interval": 1.0}  # pinned (the default is 0.25 s): figures stay comparable


def distribution(values):
    return {"n": len(values), "p50": statistics.median(values), "p99": pct(values, 99),
            "max": max(values)}


def stored(api, name) -> int:
    return len(api.notifications(type="COMPUTE_HOST", hostname=name))


def bench_alert(api, tmp: Path, runs: int):
    me = f"bench-alert-{os.getpid()}-me"
    conf = write_conf(tmp / "alert.conf", hostname=me, state_path=tmp / "alert",
                      endpoint=api.endpoint, sections={"host": {"monitoring_driver": "none"},
                                                       "delivery": DELIVERY})
    (tmp / "alert").mkdir()
    out, agent = [], []
    with PeerDaemon(conf):
        for i in range(runs):
            node = f"bench-alert-{os.getpid()}-{i}"
            api.ensure_host(node)
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("CRM_")},
                   "CRM_alert_kind": "fencing", "CRM_alert_node": node,
                   "CRM_alert_task": "reboot", "CRM_alert_rc": "0",
                   "CRM_alert_recipient": str(conf),
                   "CRM_alert_desc": f"Operation reboot of {node}: OK"}
            t0 = time.monotonic()
            subprocess.run([str(BIN / "ha-pacemaker-alert")], env=env, check=True,
                           capture_output=True, timeout=30)
            agent.append(time.monotonic() - t0)
            wait_for(lambda: stored(api, node), 20, interval=0.01)
            out.append(time.monotonic() - t0)
    return distribution(out), distribution(agent)


def bench_poll(api, tmp: Path, interval: int, runs: int):
    names = [f"bench-poll{interval}-{os.getpid()}-{i}" for i in range(runs + 1)]
    me = names[0]
    for n in names:
        api.ensure_host(n)
    work = tmp / f"poll{interval}"
    work.mkdir()
    cib = Cib(work / "cib.xml")
    state = {n: True for n in names}
    cib.write(state)
    conf = write_conf(work / "hm.conf", hostname=me, state_path=work, endpoint=api.endpoint,
                      sections={"host": {"monitoring_driver": "default",
                                         "monitoring_interval": interval,
                                         "monitoring_samples": 1,
                                         "disable_ipmi_check": "true"},
                                "delivery": {"idle_poll_interval": 1.0}})
    out = []
    with PeerDaemon(conf, env=cib.env):
        time.sleep(interval + 0.5)
        for peer in names[1:]:
            time.sleep(random.uniform(0, interval))  # random phase of the poll
            state[peer] = False
            t0 = time.monotonic()
            cib.write(state)
            wait_for(lambda: stored(api, peer), interval + 15, interval=0.01)
            out.append(time.monotonic() - t0)
    return distribution(out)


def etcd_peers(cluster, api, endpoint, tmp: Path, ttl: int, tag: str):
    names = [f"bench-etcd{tag}-{os.getpid()}-h{i}" for i in range(cluster.size)]
    daemons, confs = [], []
    prefix = f"/bench/{tag}-{os.getpid()}"
    for i, n in enumerate(names):
        api.ensure_host(n)
        d = tmp / n
        d.mkdir()
        conf = write_conf(d / "hm.conf", hostname=n, state_path=d, endpoint=endpoint,
                          sections={"host": {"monitoring_driver": "etcd"},
                                    "delivery": DELIVERY,
                                    "hostmonitor_peers": {
                                        "etcd_networks": "management:http://127.0.0.1:2379",
                                        "etcd_prefix": prefix, "etcd_lease_ttl": ttl,
                                        "etcd_timeout": 1, "mass_failure_fraction": 0.9}})
        confs.append(conf)
        daemons.append(PeerDaemon(conf, netns=cluster.namespaces[i]).start())
    return names, daemons, confs, prefix


def leader_index(cluster) -> int | None:
    for i in range(cluster.size):
        try:
            st = etcd3gw.Etcd3Client(host=cluster.addresses[i], timeout=2,
                                     api_path="/v3/").status()
            if st["leader"] == st["header"]["member_id"]:
                return i
        except Exception:  # noqa: BLE001
            continue
    return None


def bench_etcd(cluster, api, endpoint, tmp: Path, ttl: int, runs: int):
    out, leader_runs = [], 0
    for r in range(runs):
        names, daemons, confs, prefix = etcd_peers(cluster, api, endpoint, tmp, ttl,
                                                   f"t{ttl}r{r}")
        client = etcd3gw.Etcd3Client(host=cluster.addresses[0], timeout=3, api_path="/v3/")
        try:
            wait_for(lambda: client.get(prefix + "/reporter"), 15)
            reporter = names.index(client.get(prefix + "/reporter")[0].decode().rsplit(":", 1)[0])
            victim = (reporter + 1 + r % 2) % 3
            leader_runs += leader_index(cluster) == victim
            time.sleep(random.uniform(0, ttl / 3))  # random phase of the keep-alive
            t0 = time.monotonic()
            cluster.isolate(victim)
            wait_for(lambda: stored(api, names[victim]), 3 * ttl + 15, interval=0.01)
            out.append(time.monotonic() - t0)
        finally:
            for d in daemons:
                d.stop()
            cluster.heal(victim)
            cluster.wait_healthy(20)
    return distribution(out), leader_runs


def etcd_metrics(cluster) -> dict[str, float]:
    total: dict[str, float] = {}
    for addr in cluster.addresses:
        text = urllib.request.urlopen(f"http://{addr}:2379/metrics", timeout=5).read().decode()
        for line in text.splitlines():
            for key in ("etcd_server_proposals_committed_total ", "etcd_mvcc_put_total ",
                        "etcd_debugging_lease_renewed_total "):
                if line.startswith(key):
                    total[key.strip()] = total.get(key.strip(), 0) + float(line.split()[-1])
    return total


def etcd_cpu(cluster) -> float:
    return sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in cluster.procs)


def bench_simulation(cluster, api, endpoint, tmp: Path, hosts: int, ttl: int = 4):
    names, daemons, confs, prefix = etcd_peers(cluster, api, endpoint, tmp, ttl, "sim")
    client = etcd3gw.Etcd3Client(host=cluster.addresses[0], timeout=5, api_path="/v3/")
    sims = [f"bench-sim-{os.getpid()}-{i}" for i in range(hosts)]
    leases = {}
    for s in sims[:3]:
        api.ensure_host(s)  # the failed ones must be known to Masakari
    for s in sims:
        lease = client.lease(ttl)
        client.put(f"{prefix}/hosts/{s}", "{}")
        client.put(f"{prefix}/alive/management/{s}", "{}", lease)
        leases[s] = lease
    stop = threading.Event()

    def refresh():
        while not stop.wait(ttl / 3):
            for lease in list(leases.values()):
                try:
                    lease.refresh()
                except Exception:  # noqa: BLE001
                    pass
    t = threading.Thread(target=refresh, daemon=True)
    t.start()
    try:
        time.sleep(ttl)
        m0, c0, t0 = etcd_metrics(cluster), etcd_cpu(cluster), time.monotonic()
        time.sleep(10)
        m1, c1, t1 = etcd_metrics(cluster), etcd_cpu(cluster), time.monotonic()
        dt = t1 - t0
        load = {k: (m1.get(k, 0) - m0.get(k, 0)) / dt for k in m1}
        cpu = (c1 - c0) / dt * 100
        per_failure = []
        for s in sims[:3]:
            t_fail = time.monotonic()
            leases.pop(s).revoke()
            wait_for(lambda: stored(api, s), 20, interval=0.02)
            lat = time.monotonic() - t_fail
            time.sleep(1.5)
            queued = sum(len(outbox_rows(c, s)) for c in confs)
            per_failure.append((lat, stored(api, s), queued))
        return {"hosts": hosts + len(names), "load": load, "etcd_cpu_pct": cpu,
                "per_failure": per_failure}
    finally:
        stop.set()
        t.join()
        for d in daemons:
            d.stop()
        client.delete(prefix, range_end=prefix[:-1] + chr(ord(prefix[-1]) + 1))


def bench_live(runs: int, token_ms: int) -> dict:
    """Failure → STOPPED/NORMAL stored on the live cluster, poll driver then alert agent."""
    from tests.hostmonitor.peers import live as lt

    work = Path(tempfile.mkdtemp(prefix=f"bench-pcmk-{os.getpid()}-"))
    work.chmod(0o755)
    api = MasakariAPI(work / "api", duplicate_interval=1)
    (work / "api").mkdir()
    cluster = PacemakerCluster(work / "cluster", token_ms=token_ms)
    out: dict = {"token_ms": token_ms}
    try:
        api.start()
        cluster.start()
        out["formation"] = cluster.timings["formation"]
        live = lt.Live(cluster, api, work)
        for n in cluster.nodes:
            api.ensure_host(n)
        for mode in ("poll", "alert"):
            live.use("default" if mode == "poll" else "none")
            if mode == "alert":
                wrapper = work / "alert-wrapper"
                wrapper.write_text("#!/bin/sh\n"
                                   f"exec {BIN / 'ha-pacemaker-alert'} --config-file "
                                   f"{work}/run{live.run}/$(uname -n)/hm.conf \"$@\"\n")
                wrapper.chmod(0o755)
                cluster.configure_alert(cluster.nodes[0], str(wrapper), "monitors.conf")
            stored_s, lost_s, fenced_s = [], [], []
            for r in range(runs):
                live.begin()
                dc = cluster.dc()
                victim = [n for n in cluster.nodes if n != dc][r % 2]
                survivor = dc
                fence_before = cluster.fence_log().count("\n")
                t_wall, t0 = time.time(), time.monotonic()
                cluster.kill(victim)
                lost_at = fenced_at = None
                while not live.stored(victim):
                    now = time.monotonic()
                    if lost_at is None and victim not in cluster.view(survivor)["online"]:
                        lost_at = now - t0
                    if fenced_at is None:
                        lines = cluster.fence_log().splitlines()[fence_before:]
                        hit = [float(x.split()[0]) for x in lines if f" {victim}:" in x]
                        if hit:
                            fenced_at = hit[0] - t_wall
                    if now - t0 > 60:
                        raise RuntimeError(f"{mode}: {victim} not reported within 60 s")
                    time.sleep(0.05)
                stored_s.append(time.monotonic() - t0)
                if lost_at is not None:
                    lost_s.append(lost_at)
                if fenced_at is not None:
                    fenced_s.append(fenced_at)
                time.sleep(lt.GRACE + 2)
                assert live.stored(victim) == [lt.STOPPED_NORMAL], live.stored(victim)
                live.restart(victim)
                wait_for(lambda: len(live.stored(victim)) == 2, 40, what="STARTED")
                print(f"  live {mode} run {r}: stored {stored_s[-1]:.2f}s", flush=True)
            out[mode] = distribution(stored_s)
            out[f"{mode}_lost"] = distribution(lost_s) if lost_s else None
            out[f"{mode}_fenced"] = distribution(fenced_s) if fenced_s else None
            if mode == "alert":
                cluster.remove_alert(cluster.nodes[0], "masakari")
        live.stop_daemons()
    finally:
        cluster.stop()
        api.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sim-hosts", type=int, default=120)
    parser.add_argument("--token-ms", default="1000,3000",
                        help="corosync totem token timeouts (ms, comma separated) of the live "
                             "Pacemaker cluster; 3000 is corosync's default")
    parser.add_argument("--only-live", action="store_true",
                        help="run only the live Pacemaker cluster part; the other figures "
                             "are kept from the last full run")
    args = parser.parse_args(argv)
    os.environ.setdefault("MASAKARI_VENV", str(ROOT / ".venv-masakari"))
    live = []
    for token in (int(t) for t in str(args.token_ms).split(",")):
        live.append(bench_live(args.runs, token))
        print("live pacemaker", live[-1], flush=True)
    write_live_fragment(live, args)
    if args.only_live:
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    results: dict = {}
    cluster = EtcdCluster(tmp / "etcd")
    (tmp / "etcd").mkdir()
    api = MasakariAPI(tmp / "api", listen="0.0.0.0")
    api.start()
    cluster.start()
    endpoint = f"http://{cluster.bridge_ip}:{api.port}/v1"
    try:
        results["alert"], results["alert_agent"] = bench_alert(api, tmp, args.runs * 2)
        print("alert path", results["alert"], "agent exit", results["alert_agent"], flush=True)
        for interval in (1, 2, 5):
            results[f"poll{interval}"] = bench_poll(api, tmp, interval, args.runs)
            print(f"poll interval {interval}", results[f"poll{interval}"], flush=True)
        for ttl in (2, 5):
            results[f"etcd{ttl}"], results[f"etcd{ttl}_leader"] = bench_etcd(
                cluster, api, endpoint, tmp, ttl, max(3, args.runs - 1))
            print(f"etcd ttl {ttl}", results[f"etcd{ttl}"], "leader isolated in",
                  results[f"etcd{ttl}_leader"], flush=True)
        results["sim"] = bench_simulation(cluster, api, endpoint, tmp, args.sim_hosts)
        print("simulation", results["sim"], flush=True)
    finally:
        api.stop()
        cluster.stop()
    write_fragment(results, args)
    return 0


LIVE_FRAGMENT = ROOT / "docs/benchmarks.d/hostmonitor-peers-live.md"


def write_live_fragment(results, args) -> None:
    def row(label, d):
        if not d:
            return f"| {label} | 0 | – | – | – |"
        return f"| {label} | {d['n']} | {d['p50']:.2f} | {d['p99']:.2f} | {d['max']:.2f} |"

    tokens = ",".join(str(r["token_ms"]) for r in results)
    lines = [
        "## hostmonitor (peers): live Pacemaker cluster, node killed → notification stored",
        "",
        f"Command: `.venv/bin/python -m bench.bench_hostmonitor_peers --only-live --runs "
        f"{args.runs} --token-ms {tokens}`. A live 3-node corosync 3.1.7 + Pacemaker "
        "2.1.5 cluster (tests/fixtures/pacemaker_cluster.py, one network + mount namespace per "
        "node, knet), a lab fence agent that SIGKILLs the node's stack. Each run SIGKILLs the "
        "corosync and Pacemaker processes of one node that is not the DC and measures until "
        "the real masakari-api stores COMPUTE_HOST STOPPED/OFFLINE/NORMAL (reported once, by "
        "the DC); the node then rejoins. Poll driver: monitoring_interval 1 s; alert agent: "
        "run by Pacemaker as hacluster, hands over through the shared outbox (state_group "
        "haclient); delivery idle_poll_interval 0.2 s; reporter_grace 3 s (not on the path: "
        "the DC reports at once). Formation (3 online, quorum, DC; seeded CIB with "
        "dc-deadtime 2 s): " + ", ".join(f"{r['formation']:.1f} s (token {r['token_ms']} ms)"
                                         for r in results) + ".",
        "",
        "| corosync token → path | runs | p50 s | p99 s | max s |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        t = f"token {r['token_ms']} ms"
        lines += [
            row(f"{t}: poll driver, kill → stored", r["poll"]),
            row(f"{t}:   kill → survivor's crm_mon shows it offline", r.get("poll_lost")),
            row(f"{t}:   kill → fence agent ran", r.get("poll_fenced")),
            row(f"{t}: alert agent, kill → stored", r["alert"]),
            row(f"{t}:   kill → survivor's crm_mon shows it offline", r.get("alert_lost")),
            row(f"{t}:   kill → fence agent ran", r.get("alert_fenced")),
        ]
    after = []
    for r in results:
        if r.get("poll_fenced") and r.get("alert_fenced"):
            poll = r["poll"]["p50"] - r["poll_fenced"]["p50"]
            alert = r["alert"]["p50"] - r["alert_fenced"]["p50"]
            after.append(f"token {r['token_ms']} ms: poll driver {poll:.2f} s, alert agent "
                         f"{alert:.2f} s")
    if after:
        lines += ["", "From the fence agent's run to stored (difference of the medians): "
                  + "; ".join(after) + "."]
    lines += [
        "",
        "Detection is corosync's: the token timeout (corosync adds token_coefficient 650 ms "
        "per node above two: 3000 ms becomes 3650 ms with 3 nodes) plus consensus (1.2 × "
        "token) before the membership changes; Pacemaker then fences at once (this fence "
        "agent takes milliseconds; a real IPMI/PDU agent adds its seconds). The poll driver "
        "adds up to one monitoring_interval and a stonith_admin --history call; the alert "
        "agent adds a Python start, crm_mon and crm_attribute calls and the outbox hand-over. "
        "masakari-monitors' Pacemaker driver polls every 60 s by default and needs systemd, "
        "tcpdump and IPMI credentials on each node: not run here.",
        "",
    ]
    rows = []
    for r in results:
        rows += [summary.row(f"node killed → STOPPED/NORMAL stored, poll driver 1 s, token "
                             f"{r['token_ms']} ms, p50", "s", r["poll"]["p50"],
                             note="polls every 60 s by default (design)"),
                 summary.row(f"node killed → STOPPED/NORMAL stored, alert agent, token "
                             f"{r['token_ms']} ms, p50", "s", r["alert"]["p50"],
                             note="no alert agent")]
    summary.record("hostmonitor-peers-live", "hostmonitor (peers, live Pacemaker)", rows)
    LIVE_FRAGMENT.write_text("\n".join(lines) + "\n")
    print(f"wrote {LIVE_FRAGMENT}")


def write_fragment(r, args) -> None:
    def row(label, s, mm=""):
        return f"| {label} | {s['n']} | {s['p50']:.2f} | {s['p99']:.2f} | {mm} |"

    sim = r["sim"]
    lines = [
        "## hostmonitor (peers): peer failure → notification stored by the API",
        "",
        f"Command: `.venv/bin/python -m bench.bench_hostmonitor_peers --runs {args.runs} "
        f"--sim-hosts {args.sim_hosts}` (real masakari-api, real crm_mon on CIB files, real "
        "3-member etcd 3.4 in network namespaces; delivery idle_poll_interval pinned at 1 s; "
        "the default is now 0.25 s).",
        "",
        "| path | runs | p50 s | p99 s | masakari-monitors 22.0.0 |",
        "|---|---|---|---|---|",
        row("Pacemaker alert agent (fencing alert → stored)", r["alert"],
            "no alert agent (polls only)"),
        row("  of which the agent's own run (returns to Pacemaker)", r["alert_agent"], ""),
    ]
    for interval in (1, 2, 5):
        lines.append(row(f"poll driver, monitoring_interval {interval} s", r[f"poll{interval}"],
                         "60 s interval: uniform 0–60 s + poll, mean ≈ 30 s (design)"
                         if interval == 1 else ""))
    for ttl in (2, 5):
        lines.append(row(f"etcd, lease TTL {ttl} s (leader isolated in "
                         f"{r[f'etcd{ttl}_leader']} run(s))", r[f"etcd{ttl}"],
                         "no etcd driver" if ttl == 2 else ""))
    per = sim["per_failure"]
    load = sim["load"]
    lines += [
        "",
        f"Poll driver latency ≈ uniform(0, monitoring_interval) + crm_mon (~50 ms) + delivery: "
        "at masakari-monitors' default of 60 s the same design gives a mean of ≈ 30 s and up "
        "to 60 s (its pacemaker driver cannot run here: it needs systemd, corosync and tcpdump "
        "on a live cluster, so that column is its design, not a measurement). etcd latency ≈ "
        "TTL + up to one keep-alive period + settle_time (1 s); when the isolated member was "
        "etcd's leader, etcd re-grants every lease its full TTL after electing a new leader, "
        "which adds ≈ one TTL.",
        "",
        f"**{sim['hosts']} monitored hosts on etcd** (3 real hostmonitors + "
        f"{sim['hosts'] - 3} simulated members refreshing lease-backed keys every TTL/3, "
        "TTL 4 s), steady state, summed over the 3 etcd members' metrics: "
        f"{load.get('etcd_server_proposals_committed_total', 0):.1f} Raft proposals/s, "
        f"{load.get('etcd_debugging_lease_renewed_total', 0):.1f} lease renewals/s (counted by the leader), "
        f"{load.get('etcd_mvcc_put_total', 0):.2f} puts/s; the 3 etcd processes together use "
        f"{sim['etcd_cpu_pct']:.1f} % of one core.",
        "",
        "| failure | lease revoked → stored (s; the reporter's decision, settle_time 1 s, and "
        "delivery — without the TTL wait) | notifications stored by the API | rows queued in "
        "all outboxes | masakari-monitors |",
        "|---|---|---|---|---|",
    ]
    for i, (lat, n_api, n_q) in enumerate(per, 1):
        lines.append(f"| {i} | {lat:.2f} | {n_api} | {n_q} | every node reports (design, not measured): "
                     f"{sim['hosts'] - 1} POSTs, {sim['hosts'] - 2} answered 409 |")
    lines.append("")
    summary.record("hostmonitor-peers", "hostmonitor (peers)", [
        summary.row("Pacemaker fencing alert → stored, p50", "s", r["alert"]["p50"],
                    note="no alert agent: polls every 60 s (mean ≈ 30 s, design)"),
        summary.row("poll driver at 5 s interval → stored, p50", "s", r["poll5"]["p50"],
                    note="same design at its 60 s default: mean ≈ 30 s"),
        summary.row("etcd lease TTL 5 s → stored, p50", "s", r["etcd5"]["p50"],
                    note="no etcd driver"),
        summary.row(f"notifications per peer failure, {sim['hosts']} hosts", "",
                    max(n for _, n, _ in per) if per else None,
                    note=f"every node reports: {sim['hosts'] - 1} POSTs (design)")])
    FRAGMENT.parent.mkdir(parents=True, exist_ok=True)
    FRAGMENT.write_text("\n".join(lines) + "\n")
    print(f"wrote {FRAGMENT}")


if __name__ == "__main__":
    sys.exit(main())
