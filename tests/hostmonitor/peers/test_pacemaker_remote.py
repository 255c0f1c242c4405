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
"""
from __future__ import annotations

import pytest

from tests.helpers import wait_for
from tests.hostmonitor.peers.helpers import sent
from tests.hostmonitor.peers.live import STARTED, STOPPED_NORMAL, live_cluster, reset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with live_cluster(tmp_path_factory.mktemp("api-pcmk-remote"), "pcmk-remote",
                      remotes=2) as env:
        yield env


@pytest.fixture
def poll(live):
    live.use("default")
    live.begin()
    yield live
    reset(live)


@pytest.fixture
def restricted(live):
    live.use("default", restrict_to_remotes="true")
    live.begin()
    yield live
    reset(live)


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
    # the remote's connection may have run on the fenced member: killed while it moves, the
    # remote's own fencing waits for the connection's recovery (longer than stonith_wait
    # under load: UNKNOWN first, seen in CI); this test is about who reports, not that
    wait_for(lambda: c.remote_connected(remote, dc), 60, what=f"{remote} reconnected")
    c.kill(remote)
    wait_for(lambda: live.stored(remote), 40, what=f"STOPPED of {remote} stored")
    assert _fenced(c, remote), (live.stored(remote), c.fence_log())
    live.settle()
    assert live.stored(remote) == [STOPPED_NORMAL]
    assert _posts_since(live, remote, before[remote]) == [(STOPPED_NORMAL, 202)]
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
