"""Poll driver compatible with masakari-monitors' ``[host] monitoring_driver = default``.

Every ``monitoring_interval`` seconds it reads ``crm_mon --output-as=xml`` (with a timeout).
A peer's state must be seen ``monitoring_samples`` times in a row before anything is sent
(flapping is damped, by hostmonitor.damper as the local source's actions are). Nothing is
sent without quorum, nor when this node itself is shown offline (it is the isolated one). There is no silent baseline: a peer already offline when
the daemon starts is reported. Fencing is confirmed from the fencer's history
(``stonith_admin --history``): confirmed → host_status NORMAL; fencer unreachable or no
confirmation within ``stonith_wait`` → UNKNOWN (``disable_ipmi_check`` → always NORMAL),
followed by NORMAL when a later fencing succeeds. One node reports: the DC; the others stand
by (``hostmonitor.peers.election``).
What was reported survives restarts (``<state_path>/hostmonitor-peers-pacemaker.json``), so
a restart neither repeats nor forgets a report.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import time

from monitors import log, statefile
from monitors.source import Health, Source

from hostmonitor import payloads
from hostmonitor.damper import Damper
from hostmonitor.peers import crm, election, opts
from hostmonitor.peers.opts import GROUP

LOG = logging.getLogger(__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _distinct_hints(rec: dict, decision: dict) -> None:
    """What this node knows of the peer's earlier failure, for the row's decision: when it
    was last seen online and its previous fencing (monitors.recipient.distinct; a reporter
    that did not report that failure itself has no row of it)."""
    if rec.get("last_online"):
        decision["healthy_since"] = rec["last_online"]
    if rec.get("earlier_fencing"):
        decision["earlier_failure_at"] = rec["earlier_fencing"]


class PacemakerSource(Source):
    """The Pacemaker poll driver (``[host] monitoring_driver = default``, ``simple`` or
    ``pacemaker``)."""

    name = "pacemaker"

    @classmethod
    def enabled(cls, conf) -> bool:
        return opts.peer_source(conf) == cls.name

    def __init__(self, conf, emit):
        super().__init__(conf, emit)
        self.path = os.path.join(conf.state_path, "hostmonitor-peers-pacemaker.json")
        # node -> {"reported": "online"|"offline", "at": iso, "last_online": iso|None,
        #          "offline_since": iso|None}
        self.nodes: dict[str, dict] = self._load().get("nodes", {})
        # each peer's online flag must be seen monitoring_samples polls in a row
        self.damper = Damper(conf.host.monitoring_samples)
        # Nodes whose report the outbox has not taken yet (disk full: held in the daemon's
        # memory). Their record does not move until it is durable, and they are not
        # reported twice meanwhile.
        self._held: set[str] = set()
        self._health = Health(True, "starting")

    # -- Source interface -------------------------------------------------------------------
    def start(self) -> None:
        self.spawn(self._loop, "pacemaker-poll")

    def reload(self, conf) -> None:
        super().reload(conf)
        self.damper.configure(conf.host.monitoring_samples)

    def stop(self, timeout: float | None = None) -> None:
        super().stop(self.conf[GROUP].command_timeout + 2 if timeout is None else timeout)

    def health(self) -> Health:
        return self._health

    # -- loop -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self.stopping:
            started = time.monotonic()
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a bad poll never ends monitoring
                LOG.exception("pacemaker poll failed; next poll in %ss",
                              self.conf.host.monitoring_interval)
                self._health = Health(False, "poll failed (see log)")
            wait = self.conf.host.monitoring_interval - (time.monotonic() - started)
            self.sleep(max(wait, 0.05))

    def poll(self) -> None:
        host, peers = self.conf.host, self.conf[GROUP]
        try:
            view = crm.cluster_view(peers.crm_mon_command, peers.command_timeout)
        except crm.CommandError as exc:
            LOG.warning("cannot read the cluster state: %s", exc)
            self._health = Health(False, str(exc)[:160])  # names the command already
            return
        me = view.nodes.get(self.conf.hostname)
        if not view.quorum:
            self._health = Health(False, "no quorum: reporting nobody")
            LOG.warning("cluster has no quorum: no peer is reported")
            return
        if me is not None and not me.online:
            self._health = Health(False, "this node is offline in the cluster view: "
                                         "reporting nobody")
            return
        node_type = host.pacemaker_node_type
        if node_type == "autodetect":
            node_type = "remote" if me is not None and me.type == "remote" else "cluster"
        now = _now()
        watched = 0
        for node in view.nodes.values():
            if node.name == self.conf.hostname or node.type not in ("member", "remote"):
                continue
            if host.restrict_to_remotes and node.type != "remote":
                continue
            watched += 1
            self._observe(node, now, view)
        self._save()
        down = sorted(n for n, s in self.nodes.items() if s.get("reported") == "offline")
        role = "reporter (DC)" if view.dc == self.conf.hostname else f"standby (DC {view.dc})"
        self._health = Health(True, f"{node_type} node, quorum, {role}, {watched} peer(s) "
                                    "watched" + (f", down: {','.join(down)}" if down else ""))

    def _observe(self, node: crm.Node, now: dt.datetime, view: crm.ClusterView) -> None:
        count = self.damper.observe(node.name, node.online).count
        rec = self.nodes.setdefault(node.name, {"reported": "online", "last_online": None})
        if node.online:
            rec["last_online"] = now.isoformat()
            if rec.get("reported") != "offline":
                rec.pop("offline_since", None)
        elif not rec.get("offline_since"):
            rec["offline_since"] = now.isoformat()
        if not self.damper.settled(node.name):
            return
        if not node.online and rec.get("reported") != "offline":
            self._report_offline(node, rec, now, view)
        elif not node.online and rec.get("host_status") == "UNKNOWN" \
                and not self.conf.host.disable_ipmi_check:
            self._confirm_later(node, rec, now, view)
        elif node.online and rec.get("reported") == "offline":
            since = dt.datetime.fromisoformat(rec["at"])
            decision = {"driver": "pacemaker-poll", "samples": count, "node_type": node.type}
            if self._elect(node.name, rec, payloads.started(node.name, now), decision, now,
                           since, view):
                rec.update(reported="online")
                for key in ("offline_since", "host_status", "standby"):
                    rec.pop(key, None)

    def _window_start(self, rec: dict) -> dt.datetime:
        last_online = rec.get("last_online")
        return dt.datetime.fromisoformat(last_online) if last_online \
            else dt.datetime.fromisoformat(rec["offline_since"]) - dt.timedelta(seconds=600)

    def _fenced(self, node: crm.Node, rec: dict) -> tuple[bool | None, str]:
        """(True, evidence) when the fencer's history shows the node powered off since it
        was last seen online; (False, why) when the fencer cannot be asked; (None, '') when
        it can but nothing is there yet."""
        peers = self.conf[GROUP]
        try:
            events = crm.fence_history(peers.stonith_admin_command, node.name,
                                       peers.command_timeout)
        except crm.CommandError as exc:
            return False, f"fencer unreachable: {exc}"[:200]
        since = self._window_start(rec)
        event = crm.fenced_since(events, node.name, since)
        if event is None:
            return None, ""
        # An earlier fencing of the node (before it was last seen online) may have been
        # reported by another node: Masakari's duplicate check must not take this failure
        # for that one (monitors.recipient.distinct).
        before = [e.completed for e in events if e.target == node.name
                  and e.status == "success" and e.completed is not None
                  and e.completed < since - dt.timedelta(seconds=5)]
        rec["earlier_fencing"] = max(before).isoformat() if before else None
        return True, f"{event.action} {event.status} at {event.completed.isoformat()}"

    def _report_offline(self, node: crm.Node, rec: dict, now: dt.datetime,
                        view: crm.ClusterView) -> None:
        host = self.conf.host
        since = dt.datetime.fromisoformat(rec["offline_since"])
        decision = {"driver": "pacemaker-poll", "node_type": node.type,
                    "samples": host.monitoring_samples, "quorum": True}
        if host.disable_ipmi_check:
            fenced, decision["fencing"] = True, "not required (disable_ipmi_check)"
        else:
            fenced, decision["fencing"] = self._fenced(node, rec)
            if fenced is None:
                if (now - since).total_seconds() < host.stonith_wait:
                    if not rec.get("waiting"):
                        LOG.info("%s is offline; waiting up to %ss for its fencing",
                                 node.name, host.stonith_wait)
                        rec["waiting"] = True
                    return  # asked again at the next poll
                fenced = False
                decision["fencing"] = f"no confirmation within {host.stonith_wait}s"
        if fenced:
            _distinct_hints(rec, decision)
        if self._elect(node.name, rec, payloads.stopped(node.name, fenced, now), decision, now,
                       self._window_start(rec), view):
            rec.pop("waiting", None)
            rec.update(reported="offline", host_status="NORMAL" if fenced else "UNKNOWN")
            if not fenced:
                LOG.warning("%s: fencing not confirmed; NORMAL follows if a later fencing "
                            "succeeds", node.name)

    def _confirm_later(self, node: crm.Node, rec: dict, now: dt.datetime,
                       view: crm.ClusterView) -> None:
        """Reported UNKNOWN (fencing failed or late): Pacemaker keeps retrying the fencing;
        when one succeeds, STOPPED/NORMAL follows (Masakari then recovers the host)."""
        fenced, evidence = self._fenced(node, rec)
        if not fenced:
            return
        decision = {"driver": "pacemaker-poll", "node_type": node.type, "quorum": True,
                    "fencing": evidence, "after": "an earlier UNKNOWN report"}
        _distinct_hints(rec, decision)
        if self._elect(node.name, rec, payloads.stopped(node.name, True, now), decision, now,
                       self._window_start(rec), view):
            rec.update(host_status="NORMAL")

    def _elect(self, name: str, rec: dict, notification, decision: dict, now: dt.datetime,
               since: dt.datetime, view: crm.ClusterView) -> bool:
        """Send ``notification`` if this node is the reporter (the DC), or a standby whose
        grace ran out with no record of it in the CIB. True when the failure is reported
        (by us or by the reporter), False to look again at the next poll."""
        host, peers = self.conf.host, self.conf[GROUP]
        me = self.conf.hostname
        event, status = notification.payload["event"], notification.payload["host_status"]
        done = election.recorded(peers.crm_mon_command, name, peers.command_timeout)
        if election.covers(done, event, status, since.timestamp()):
            LOG.info("%s %s/%s: reported by %s", name, event, done.host_status, done.by)
            rec.update(at=now.isoformat(), by=done.by)
            rec.pop("standby", None)
            if event == "STOPPED":
                rec["host_status"] = done.host_status
            return True
        if view.dc == me:
            decision["reporter"] = f"{me} (DC)"
        else:
            key = f"{event}:{status}"
            standby = rec.get("standby") or {}
            if standby.get("key") != key:
                rec["standby"] = standby = {"key": key, "since": now.isoformat()}
            grace = peers.reporter_grace + host.monitoring_interval * host.monitoring_samples
            waited = (now - dt.datetime.fromisoformat(standby["since"])).total_seconds()
            if waited < grace:
                return False
            decision["reporter"] = (f"{me} (standby: the DC {view.dc} recorded no report "
                                    f"within {grace:g}s)")
        if name in self._held:
            return False
        result = self.emit(notification, decision=decision,
                           on_stored=lambda _result: self._held.discard(name))
        if result.id is None:
            # Held in memory: the node's record (saved to disk) does not move on, so a
            # restart meanwhile reports it again; once stored, the next poll's repeat is
            # merged by the outbox (identical pending) or answered 409 duplicate.
            self._held.add(name)
            return False
        log.event(LOG, logging.WARNING, "peer %s %s (host_status %s; fencing: %s; %s)", name,
                  event, status, decision.get("fencing", "-"), decision["reporter"],
                  fields={"PEER": name})
        election.record(peers.crm_mon_command, name,
                        crm.Report(event, status, now.timestamp(), me), peers.command_timeout)
        rec.update(at=now.isoformat(), notification=result.id, by=me)
        rec.pop("standby", None)
        return True

    def _load(self) -> dict:
        try:
            return statefile.read(self.path) or {}
        except statefile.StateFileError as exc:
            LOG.error("%s; starting from an empty state", exc)
            return {}

    def _save(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            statefile.write(self.path, {"nodes": self.nodes}, sort_keys=True)
        except OSError as exc:
            LOG.error("cannot write %s: %s", self.path, exc)
