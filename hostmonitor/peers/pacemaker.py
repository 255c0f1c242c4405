"""Poll driver compatible with masakari-monitors' ``[host] monitoring_driver = default``.

Every ``monitoring_interval`` seconds it reads ``crm_mon --output-as=xml`` (with a timeout).
A peer's state must be seen ``monitoring_samples`` times in a row before anything is sent
(flapping is damped). Nothing is sent without quorum, nor when this node itself is shown
offline (it is the isolated one). There is no silent baseline: a peer already offline when
the daemon starts is reported. Fencing is confirmed from the fencer's history
(``stonith_admin --history``): confirmed → host_status NORMAL; fencer unreachable or no
confirmation within ``stonith_wait`` → UNKNOWN (``disable_ipmi_check`` → always NORMAL).
What was reported survives restarts (``<state_path>/hostmonitor-peers-pacemaker.json``), so
a restart neither repeats nor forgets a report.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time

from monitors import log
from monitors.service import Health

from hostmonitor.peers import crm, payloads, state
from hostmonitor.peers.opts import GROUP

LOG = logging.getLogger(__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class PacemakerPoller:
    """The Pacemaker poll driver as a daemon source."""

    name = "pacemaker"

    def __init__(self, conf):
        self.conf = conf
        self.path = os.path.join(conf.state_path, "hostmonitor-peers-pacemaker.json")
        # node -> {"reported": "online"|"offline", "at": iso, "last_online": iso|None,
        #          "offline_since": iso|None}
        self.nodes: dict[str, dict] = state.load(self.path).get("nodes", {})
        self.streak: dict[str, tuple[bool, int]] = {}
        self.emit = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._health = Health(True, "starting")

    # -- Source interface -------------------------------------------------------------------
    def start(self, emit) -> None:
        self.emit = emit
        self._thread = threading.Thread(target=self._loop, name="pacemaker-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(self.conf[GROUP].command_timeout + 2)

    def reload(self, conf) -> None:
        self.conf = conf

    def health(self) -> Health:
        return self._health

    # -- loop -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a bad poll never ends monitoring
                LOG.exception("pacemaker poll failed; next poll in %ss",
                              self.conf.host.monitoring_interval)
                self._health = Health(False, "poll failed (see log)")
            wait = self.conf.host.monitoring_interval - (time.monotonic() - started)
            self._stop.wait(max(wait, 0.05))

    def poll(self) -> None:
        host, peers = self.conf.host, self.conf[GROUP]
        try:
            view = crm.cluster_view(peers.crm_mon_command, peers.command_timeout)
        except crm.CommandError as exc:
            LOG.warning("cannot read the cluster state: %s", exc)
            self._health = Health(False, f"crm_mon: {exc}"[:160])
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
            self._observe(node, now)
        self._save()
        down = sorted(n for n, s in self.nodes.items() if s.get("reported") == "offline")
        self._health = Health(True, f"{node_type} node, quorum, {watched} peer(s) watched"
                                    + (f", down: {','.join(down)}" if down else ""))

    def _observe(self, node: crm.Node, now: dt.datetime) -> None:
        samples = self.conf.host.monitoring_samples
        online, count = self.streak.get(node.name, (node.online, 0))
        count = count + 1 if online == node.online else 1
        self.streak[node.name] = (node.online, count)
        rec = self.nodes.setdefault(node.name, {"reported": "online", "last_online": None})
        if node.online:
            rec["last_online"] = now.isoformat()
            if rec.get("reported") != "offline":
                rec.pop("offline_since", None)
        elif not rec.get("offline_since"):
            rec["offline_since"] = now.isoformat()
        if count < samples:
            return
        if rec.get("held"):  # a report the outbox has not taken yet: not twice
            return
        if not node.online and rec.get("reported") != "offline":
            self._report_offline(node, rec, now)
        elif node.online and rec.get("reported") == "offline":
            self._emit_then_record(node.name, rec, payloads.started(node.name, now),
                                   {"driver": "pacemaker-poll", "samples": count,
                                    "node_type": node.type}, "online", now)
            rec.pop("offline_since", None)

    def _emit_then_record(self, name, rec, notification, decision, reported, now) -> None:
        """The node's reported state (saved to disk) moves only once the notification is in
        the outbox: when the outbox cannot take it yet (disk full), a restart meanwhile
        reports the node again instead of believing it reported."""
        box = {}

        def stored():
            rec.pop("held", None)
            rec.update(reported=reported, at=now.isoformat(), notification=box.get("id"))
        rec["held"] = reported
        result = self.emit(notification, decision=decision, on_stored=stored)
        box["id"] = result.id
        if result.id is not None:
            rec["notification"] = result.id

    def _report_offline(self, node: crm.Node, rec: dict, now: dt.datetime) -> None:
        host, peers = self.conf.host, self.conf[GROUP]
        since = dt.datetime.fromisoformat(rec["offline_since"])
        last_online = rec.get("last_online")
        window_start = dt.datetime.fromisoformat(last_online) if last_online \
            else since - dt.timedelta(seconds=600)
        decision = {"driver": "pacemaker-poll", "node_type": node.type,
                    "samples": host.monitoring_samples, "quorum": True}
        if host.disable_ipmi_check:
            fenced, decision["fencing"] = True, "not required (disable_ipmi_check)"
        else:
            try:
                events = crm.fence_history(peers.stonith_admin_command, node.name,
                                           peers.command_timeout)
            except crm.CommandError as exc:
                fenced, decision["fencing"] = False, f"fencer unreachable: {exc}"[:200]
            else:
                event = crm.fenced_since(events, node.name, window_start)
                if event is not None:
                    fenced = True
                    decision["fencing"] = (f"{event.action} {event.status} at "
                                           f"{event.completed.isoformat()}")
                elif (now - since).total_seconds() < host.stonith_wait:
                    LOG.info("%s is offline; waiting up to %ss for its fencing", node.name,
                             host.stonith_wait)
                    return  # asked again at the next poll
                else:
                    fenced = False
                    decision["fencing"] = f"no confirmation within {host.stonith_wait}s"
        self._emit_then_record(node.name, rec, payloads.stopped(node.name, fenced, now),
                               decision, "offline", now)
        log.event(LOG, logging.WARNING, "peer %s is offline (fencing: %s)", node.name,
                  decision["fencing"], fields={"PEER": node.name})

    def _save(self) -> None:
        state.save(self.path, {"nodes": {n: {k: v for k, v in r.items() if k != "held"}
                                         for n, r in self.nodes.items()}})
