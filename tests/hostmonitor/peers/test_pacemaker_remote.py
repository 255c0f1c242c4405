"""pacemaker_remote compute nodes on a live cluster: 3 full members (the controllers) and
2 remote nodes (the computes), as Red Hat Instance HA and SUSE deploy large clouds
(tests/fixtures/pacemaker_cluster.py ``remotes=2``: each remote in its own network and
mount namespace, the real pacemaker-remoted, the shared authkey in its /etc/pacemaker,
``ocf:pacemaker:remote`` connection resources, fenced by the same lab fence agent).

One ha-hostmonitor per node, remotes included, each run on its node and delivering over
the management network to a real masakari-api (duplicate window 1 s: a second report must
be stored and seen; the exactly-once claims also count what was POSTed, ``api.posts``).

- On a remote node the poll driver reads the cluster through the remote's proxy (crm_mon,
  crm_attribute, stonith_admin all work there) and knows itself a remote node.
- A killed remote node is fenced and reported STOPPED/NORMAL exactly once, by the DC (a
  full member); the other remote's daemon stands by like any standby.
- ``[host] restrict_to_remotes`` (masakari-monitors' option): only remote nodes are
  reported; a full member killed and fenced is reported by nobody.
- A remote node cut off from the cluster (its ring link down) cannot read the cluster
  (its proxied crm_mon hangs until ``command_timeout``) and reports nobody.
- A remote node's local verdict (its tenant interface down, ``[hostmonitor] fencing =
  pacemaker``) fences it through the cluster: ``stonith_admin --fence <itself>`` passes
  pacemaker-remoted's proxy, a member fences it, the DC reports NORMAL once.
- The alert agent runs on the members only (never on a remote node) and reports a killed
  remote node STOPPED/NORMAL once, STARTED once.
"""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest

from tests.helpers import BIN, wait_for
from tests.hostmonitor.peers.helpers import outbox_rows, sent
from tests.hostmonitor.peers.live import (STARTED, STOPPED_NORMAL, STOPPED_UNKNOWN,
                                          live_cluster, reset, using)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with live_cluster(tmp_path_factory.mktemp("api-pcmk-remote"), "pcmk-remote",
                      remotes=2) as env:
        yield env


@pytest.fixture
def poll(live):
    yield from using(live)


@pytest.fixture
def restricted(live):
    yield from using(live, restrict_to_remotes="true")


def _posts_since(live, host: str, before: int) -> list[tuple[dict, int | None]]:
    return sent(live.api, host)[before:]


def _fenced(cluster, node: str) -> bool:
    return any(f"{action} {node}: killed" in cluster.fence_log()
               for action in ("reboot", "off"))


def _statuses(daemon) -> list[str]:
    daemon.notify.drain()
    return [m["STATUS"] for m in daemon.notify.messages if "STATUS" in m]


def test_remote_node_reads_the_cluster_through_its_proxy(poll):
    live, c = poll, poll.cluster
    dc = c.dc()
    for r in c.remotes:
        text = wait_for(lambda r=r: next((s for s in reversed(_statuses(live.daemons[r]))
                                          if "remote node, quorum" in s), None),
                        20, what=f"{r}: STATUS of a remote node reading the cluster")
        # it watches the other 4 nodes and stands by: the DC (a full member) reports
        assert f"standby (DC {dc})" in text and "4 peer(s) watched" in text, text
    for n in c.nodes:
        text = wait_for(lambda n=n: next((s for s in reversed(_statuses(live.daemons[n]))
                                          if "cluster node, quorum" in s), None),
                        20, what=f"{n}: STATUS of a full member")
        assert "4 peer(s) watched" in text, text


def test_killed_remote_node_fenced_and_reported_once_by_the_dc(poll):
    live, c = poll, poll.cluster
    victim = c.remotes[0]
    dc = c.dc()
    before = len(sent(live.api, victim))
    c.kill(victim)
    wait_for(lambda: live.stored(victim), 40, what=f"STOPPED of {victim} stored")
    assert _fenced(c, victim), c.fence_log()
    live.settle()  # a standby (members and the other remote) would report by now
    assert live.stored(victim) == [STOPPED_NORMAL]
    assert _posts_since(live, victim, before) == [(STOPPED_NORMAL, 202)]
    queued = live.queued(victim)
    assert queued[dc] == 1 and sum(queued.values()) == 1, queued
    # repaired: it boots, pacemaker-remoted and its hostmonitor run, the members reconnect
    live.restart(victim)
    wait_for(lambda: len(live.stored(victim)) == 2, 40, what=f"STARTED of {victim}")
    live.settle()
    assert live.stored(victim) == [STOPPED_NORMAL, STARTED]
    assert _posts_since(live, victim, before) == [(STOPPED_NORMAL, 202), (STARTED, 202)]
    assert all(live.stored(n) == [] for n in c.all_nodes if n != victim)


def test_restrict_to_remotes_reports_only_remote_nodes(restricted):
    live, c = restricted, restricted.cluster
    dc = c.dc()
    member = next(n for n in c.nodes if n != dc)
    remote = c.remotes[1]
    before = {n: len(sent(live.api, n)) for n in (member, remote)}
    c.kill(member)
    wait_for(lambda: _fenced(c, member), 40, what=f"{member} fenced")
    # the remote's connection may have run on the fenced member: wait until it is back
    wait_for(lambda: c.remote_connected(remote, dc), 60, what=f"{remote} reconnected")
    c.kill(remote)
    # While the cluster is still busy with the member's failure the remote's fencing can
    # outlast stonith_wait (seen twice in CI, 2-core machine): then the DC reports UNKNOWN
    # first and NORMAL once the fencing is done, each once. Never NORMAL before it.
    wait_for(lambda: STOPPED_NORMAL in live.stored(remote), 60,
             what=f"STOPPED/NORMAL of {remote} stored")
    assert _fenced(c, remote), (live.stored(remote), c.fence_log())
    live.settle()
    stored = live.stored(remote)
    assert stored in ([STOPPED_NORMAL], [STOPPED_UNKNOWN, STOPPED_NORMAL]), stored
    assert _posts_since(live, remote, before[remote]) == [(p, 202) for p in stored]
    # the full member was killed and fenced before the remote: nobody reported it
    assert _posts_since(live, member, before[member]) == []
    assert sum(live.queued(member).values()) == 0
    text = next(s for s in reversed(_statuses(live.daemons[dc])) if "quorum" in s)
    assert "2 peer(s) watched" in text, text  # the two remotes, not the other members


def test_cut_off_remote_node_reports_nobody(poll):
    """Its ring link down (the management network, where the API is, stays up): the
    remote's proxy has no cluster behind it, its crm_mon hangs until command_timeout, and
    it reports nobody — although it could reach the API. Fencing is made to fail so the
    cut-off node lives on, as it does until a real fence device reaches it."""
    live, c = poll, poll.cluster
    alone = c.remotes[0]
    d = live.daemons[alone]
    c.fail_fencing(True)
    marks = d.log_text().count("cannot read the cluster state")
    c.set_ring(alone, False)
    wait_for(lambda: d.log_text().count("cannot read the cluster state") >= marks + 2, 30,
             what=f"{alone}: two polls that cannot read the cluster")
    assert c.stack_running(alone) and d.proc.poll() is None
    rows = live._rows()
    assert all(rows.get((alone, n), 0) == live.base_rows.get((alone, n), 0)
               for n in c.all_nodes), "the cut-off remote queued nothing about anybody"
    assert all(live.stored(n) == [] for n in c.all_nodes if n != alone)
    c.set_ring(alone, True)
    c.fail_fencing(False)
    # back: it reads the cluster again
    wait_for(lambda: any("remote node, quorum" in s for s in _statuses(d)[-3:]), 60,
             what=f"{alone}: reads the cluster again")
    rows = live._rows()
    assert all(rows.get((alone, n), 0) == live.base_rows.get((alone, n), 0)
               for n in c.all_nodes)



def _local_source(tenant: str) -> dict:
    """The local source on a remote node: one tenant interface, fencing through Pacemaker,
    undamped (production: hold_down 30 s); no kernel log or hardware checks (this
    machine's /dev/kmsg is shared with other tests)."""
    return {"hostmonitor": {"tenant_interfaces": tenant, "fencing": "pacemaker",
                            "fence_timeout": 30, "evaluation_interval": 0.5,
                            "hold_down": 0, "compute_processes": "",
                            "kernel_log": "false", "hardware_check_interval": 0}}


@pytest.fixture
def self_fencing(live):
    """The poll driver everywhere; on one remote node also the local source, watching a
    tenant interface (a veth pair inside that node's network namespace)."""
    live.use("default")
    c = live.cluster
    node = c.remotes[1]
    ns = c.netns[node]
    ns.ip("link", "del", "tn0", check=False)
    ns.ip("link", "add", "tn0", "type", "veth", "peer", "name", "tn0p")
    ns.ip("link", "set", "tn0p", "up")
    ns.ip("link", "set", "tn0", "up")
    live.reconfigure(node, _local_source("tn0"))
    c.power_cut_delay(1.0)
    live.begin()
    yield live, node
    c.power_cut_delay(0)
    ns.ip("link", "set", "tn0", "up", check=False)
    live._write_conf(node, live.confs[node].parent)  # this run's configuration again
    if live.daemons[node].proc.poll() is None:
        live.start_daemon(node)
    try:
        reset(live)
    finally:
        ns.ip("link", "del", "tn0", check=False)


def _fencings(cluster, node: str) -> list[str]:
    return [line for line in cluster.fence_log().splitlines()
            if line.split(":")[0].endswith(f" {node}")]


def test_remote_node_local_verdict_fences_itself_through_the_cluster(self_fencing):
    """The local source on a remote node judges it unfit (its only tenant interface
    down): it queues its own STOPPED/UNKNOWN and runs ``stonith_admin --fence <itself>``,
    which pacemaker-remoted's proxy passes to the member hosting its connection; the
    cluster's fencer runs the lab fence agent, which kills the remote node (its daemon and
    the stonith_admin with it: a power-off). The DC reports STOPPED/NORMAL exactly once;
    the remote node's own daemon never says NORMAL about itself."""
    live, node = self_fencing
    c = live.cluster
    d = live.daemons[node]
    dc = c.dc()
    before = len(sent(live.api, node))
    fenced_before = len(_fencings(c, node))
    wait_for(lambda: any("tenant=up" in s for s in _statuses(d)), 20,
             what=f"{node}: the local source sees its tenant interface up")
    t0 = time.monotonic()
    c.netns[node].ip("link", "set", "tn0", "down")
    wait_for(lambda: len(_fencings(c, node)) > fenced_before, 40, what=f"{node} fenced")
    took_fence = time.monotonic() - t0
    wait_for(lambda: STOPPED_NORMAL in live.stored(node), 40,
             what=f"STOPPED/NORMAL of {node} stored")
    took = time.monotonic() - t0
    live.settle()
    # fenced once, by the action stonith_admin --fence asks for ("off"; the cluster's own
    # fencing of a lost node is a "reboot"), at the request of a client on a member
    fencings = _fencings(c, node)[fenced_before:]
    assert len(fencings) == 1 and f" off {node}: killed" in fencings[0], fencings
    assert not c.stack_running(node) and d.proc.poll() is not None
    event = ET.fromstring(c.fence_history(dc, node)).find(
        "list/fence_event[@action='off']")
    assert event is not None and event.get("status") == "success"
    assert event.get("client").startswith("stonith_admin.")
    assert event.get("origin") in c.nodes and event.get("delegate") in c.nodes, event.attrib
    # what the remote node queued about itself: its verdict (UNKNOWN) and the request
    mine = [r for r in outbox_rows(live.confs[node]) if r["notification"]["hostname"] == node]
    assert [r["notification"]["payload"] for r in mine] == [STOPPED_UNKNOWN]
    plan = mine[0]["decision"]["fencing"]
    assert plan["method"] == "pacemaker"
    assert plan["request"] == f"stonith_admin --fence {node} --timeout 30"
    queued = live.queued(node)
    assert queued[dc] == 1 and queued[node] == 1 and sum(queued.values()) == 2, queued
    # The verdict is usually POSTed before the fencing lands (~30 ms vs ~150 ms here);
    # under load the node may die first, and its outbox sends the verdict after the repair.
    posts = _posts_since(live, node, before)
    assert posts.count((STOPPED_NORMAL, 202)) == 1, posts
    assert all(p in [(STOPPED_NORMAL, 202), (STOPPED_UNKNOWN, 202)] for p in posts), posts
    # repaired: the interface back, the node boots; both the DC (the node is back) and the
    # node's local source (its verdict cleared) say STARTED
    c.netns[node].ip("link", "set", "tn0", "up")
    live.restart(node)
    wait_for(lambda: sum(live.queued(node).values()) == 4, 40,
             what=f"STARTED of {node} queued by the DC and by its local source")
    live.settle()
    queued = live.queued(node)
    assert queued[dc] == 2 and queued[node] == 2 and sum(queued.values()) == 4, queued
    posts = _posts_since(live, node, before)
    stopped = [p for p in posts if p[0]["event"] == "STOPPED"]
    assert sorted(stopped, key=str) == sorted([(STOPPED_NORMAL, 202), (STOPPED_UNKNOWN, 202)],
                                              key=str), posts
    started = [p for p in posts if p[0]["event"] == "STARTED"]
    # the two STARTED may land within the API's 1 s duplicate window: 409 for the second
    assert started and all(p[0] == STARTED for p in started), posts
    assert (STARTED, 202) in started
    assert all(live.stored(n) == [] for n in c.all_nodes if n != node)
    mine = [r for r in outbox_rows(live.confs[node]) if r["notification"]["hostname"] == node]
    assert STOPPED_NORMAL not in [r["notification"]["payload"] for r in mine]
    print(f"tenant down on a remote → fenced {took_fence:.1f}s, STOPPED/NORMAL stored "
          f"{took:.1f}s")


ALERT = "masakari"


@pytest.fixture
def alerts(live):
    """Daemons that only deliver (monitoring_driver none) and the alert agent installed in
    the CIB as docs/hostmonitor-peers.md says (as in test_pacemaker_live.py). The wrapper
    first writes one line per call — the node it runs on (uname -n) and the event — into
    a log every node can append to: where Pacemaker runs alert agents is what is shown."""
    live.use("none")
    live.begin()
    c = live.cluster
    ran = live.workdir / f"alert-calls-run{live.run}.log"
    ran.touch()
    ran.chmod(0o666)
    wrapper = live.workdir / f"ha-pacemaker-alert-run{live.run}"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'echo "$(uname -n) $CRM_alert_kind $CRM_alert_node $CRM_alert_desc" >> {ran}\n'
        f"exec {BIN / 'ha-pacemaker-alert'} --config-file "
        f"{live.workdir}/run{live.run}/$(uname -n)/hm.conf \"$@\"\n")
    wrapper.chmod(0o755)
    c.configure_alert(c.nodes[0], str(wrapper), "monitors.conf", alert_id=ALERT)
    yield live, ran, wrapper
    try:
        reset(live)  # the alert agent is the only reporter: the STARTED of a heal needs it
    finally:
        c.remove_alert(c.nodes[0], ALERT)
    live.stop_daemons()
    live.driver = None


def _calls(ran, about: str) -> list[tuple[str, str, str]]:
    """(ran on, kind, desc) of each alert call about node ``about``."""
    out = []
    for line in ran.read_text().splitlines():
        on, kind, node, *desc = line.split()
        if node == about:
            out.append((on, kind, " ".join(desc)))
    return out


def test_alert_agent_runs_on_members_only_and_reports_a_killed_remote_once(alerts):
    """Pacemaker runs alert agents on the cluster nodes only, for remote nodes' events
    too, never on a remote node (its documentation; shown here: the wrapper logs where
    it runs). A killed remote node: the fencing alert on every member, its node alert
    ('lost') on some; the members' agents report STOPPED/NORMAL exactly once, and its
    STARTED once after the repair."""
    (live, ran, wrapper) = alerts
    c = live.cluster
    node = c.remotes[0]
    before = len(sent(live.api, node))
    t0 = time.monotonic()
    c.kill(node)
    wait_for(lambda: live.stored(node), 40, what=f"STOPPED of {node} from the alert agent")
    took = time.monotonic() - t0
    assert _fenced(c, node), c.fence_log()
    live.settle()
    assert live.stored(node) == [STOPPED_NORMAL]
    assert _posts_since(live, node, before) == [(STOPPED_NORMAL, 202)]
    queued = live.queued(node)
    assert sum(queued.values()) == 1 and sum(queued[n] for n in c.nodes) == 1, queued
    calls = _calls(ran, node)
    fencing = [on for on, kind, desc in calls if kind == "fencing" and ": OK" in desc]
    lost = [on for on, kind, desc in calls if kind == "node" and desc == "lost"]
    assert sorted(fencing) == sorted(c.nodes), calls  # once on each member
    assert lost and set(lost) <= set(c.nodes), calls
    # repaired: the members' agents say STARTED once
    live.restart(node)
    wait_for(lambda: len(live.stored(node)) == 2, 40, what=f"STARTED of {node}")
    live.settle()
    assert live.stored(node) == [STOPPED_NORMAL, STARTED]
    assert _posts_since(live, node, before) == [(STOPPED_NORMAL, 202), (STARTED, 202)]
    calls = _calls(ran, node)
    assert any(kind == "node" and desc == "member" for _, kind, desc in calls), calls
    # never on a remote node: no call ran there, about anybody, and their Pacemaker logs
    # never name the agent
    runners = {line.split()[0] for line in ran.read_text().splitlines()}
    assert runners and runners <= set(c.nodes), runners
    for r in c.remotes:
        assert str(wrapper) not in c.pacemaker_log(r).read_text(errors="replace")
    assert all(str(wrapper) in c.pacemaker_log(n).read_text(errors="replace")
               for n in c.nodes if c.stack_running(n))
    print(f"remote killed → STOPPED/NORMAL stored via the alert agent: {took:.1f}s; "
          f"alert calls about it: {calls}")
