"""etcd peer source: lease-backed liveness keys, a watch, and one elected reporter.

Keys under ``[hostmonitor_peers] etcd_prefix`` (P):

- ``P/hosts/<host>``             registration of every monitored host (no lease);
- ``P/alive/<network>/<host>``   bound to the host's lease on that network: it vanishes
                                 when the host stops refreshing (TTL = etcd_lease_ttl);
- ``P/reporter``                 the election key, bound to the holder's lease: created with
                                 a create-if-absent transaction, so one holder at a time;
- ``P/down/<host>``              the report made for a host that is down (who, when, payload),
                                 so a new reporter knows what was reported already;
- ``P/mass-failure``             set while more than mass_failure_fraction of hosts is down.

This module is the I/O: every daemon keeps its keys alive and watches ``P/alive/``; the
reporter reads the registered hosts, the live keys and the down records (linearizable reads:
they fail without etcd quorum) on each watch event and every etcd_reconcile_interval as a
safety net, and hands that view to ``etcd_decision.decide()``, which holds the rules (who
is reported, when NORMAL, mass failure). The election is ``election.claim``/``holds``.
"""
from __future__ import annotations

import json
import logging
import threading
import time

import etcd3gw

from monitors import log, watchdog
from monitors.source import Health, Source

from hostmonitor import payloads
from hostmonitor.peers import election, opts
from hostmonitor.peers.etcd import last_part, make_client
from hostmonitor.peers.etcd_decision import (Memory, Policy, View, decide, lease_lost,
                                              to_resend)
from hostmonitor.peers.opts import GROUP

LOG = logging.getLogger(__name__)


class EtcdSource(Source):
    """The etcd peer driver (``[host] monitoring_driver = etcd``)."""

    name = "etcd"

    @classmethod
    def enabled(cls, conf) -> bool:
        return opts.peer_source(conf) == cls.name

    def __init__(self, conf, emit):
        super().__init__(conf, emit)
        self.me = conf.hostname
        p = conf[GROUP]
        if not p.etcd_networks:
            raise ValueError(f"[{GROUP}] etcd_networks is empty")
        self.prefix = p.etcd_prefix.rstrip("/")
        self.networks = list(p.etcd_networks.items())
        self.primary = self.networks[0][0]
        self.clients = {n: make_client(u, p.etcd_timeout) for n, u in self.networks}
        self.leases: dict[str, etcd3gw.Lease] = {}
        self.last_ok: dict[str, float] = {}
        self.reporter = False
        self.memory = Memory()
        self._kick = threading.Event()
        self._due: float | None = None  # monotonic time a waiting host is to be judged
        self._cancel_watch = None
        self._lock = threading.Lock()
        self._detail = "starting"
        self.stats = {"reports": 0, "reconciles": 0, "watch_events": 0}
        self._held: set[str] = set()  # reports the outbox has not taken yet
        # monotonic time the last successful refresh (or grant) of each lease was sent:
        # the lease lives at least that + TTL in etcd (the watchdog's reference)
        self.refreshed: dict[str, float | None] = {n: None for n, _ in self.networks}
        self.started = time.monotonic()
        self.feeder: watchdog.Feeder | None = None
        if p.watchdog_device:
            self.feeder = watchdog.Feeder(watchdog.Device(p.watchdog_device),
                                          self.watchdog_verdict,
                                          interval=max(p.watchdog_timeout / 4.0, 0.1))

    @property
    def mass_failure(self) -> bool:
        return self.memory.mass_failure

    # -- keys -------------------------------------------------------------------------------
    def k(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    def _mine(self) -> str | None:
        lease = self.leases.get(self.primary)
        return None if lease is None else f"{self.me}:{lease.id}"

    # -- Source interface -------------------------------------------------------------------
    def start(self) -> None:
        if self.feeder is not None:
            self._arm_watchdog()
        self.spawn(self._keepalive_loop, "etcd-keepalive")
        self.spawn(self._watch_loop, "etcd-watch")
        self.spawn(self._reconcile_loop, "etcd-reconcile")

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._kick.set()
        if self._cancel_watch:
            try:
                self._cancel_watch()
            except Exception:  # noqa: BLE001
                pass
        super().stop(self.conf[GROUP].etcd_timeout + 1 if timeout is None else timeout)
        if self.feeder is not None:
            self.feeder.stop(disarm=self.conf[GROUP].watchdog_disarm_on_stop)
        # Leave the election at once (others take over without waiting for the TTL); the
        # liveness keys are left to expire: a stopped hostmonitor is not a failed host, but
        # revoking them would make the peers report this host down.
        if self.reporter:
            try:
                self.clients[self.primary].delete(self.k("reporter"))
            except Exception:  # noqa: BLE001
                pass

    def reload(self, conf) -> None:
        p = conf[GROUP]
        if dict(p.etcd_networks) != dict(self.networks) or p.etcd_prefix.rstrip("/") != self.prefix:
            raise ValueError("etcd_networks and etcd_prefix need a restart")
        old = self.conf[GROUP]
        if (p.watchdog_device, p.watchdog_timeout) != (old.watchdog_device,
                                                       old.watchdog_timeout):
            raise ValueError(f"[{GROUP}] watchdog_device and watchdog_timeout need a restart")
        if self.feeder is not None and self.feeder.device.timeout is not None:
            # the timeout the driver took at start, which may exceed the configured one
            problems = opts.watchdog_problems(conf, timeout=self.feeder.device.timeout)
            if problems:
                raise ValueError("; ".join(problems))
        self.conf = conf

    def health(self) -> Health:
        ok = self._link_ok(self.primary) and not self.mass_failure
        if self.feeder is None:
            return Health(ok, self._detail)
        return Health(ok and not self.feeder.stopped_feeding,
                      f"{self._detail}, {self.feeder.status()}")

    # -- watchdog (monitors/watchdog.py) -----------------------------------------------------
    def _arm_watchdog(self) -> None:
        """Open the device; refuse to run when the timeout the driver took breaks the
        deadline arithmetic (opts.watchdog_problems)."""
        p = self.conf[GROUP]
        got = self.feeder.device.open(p.watchdog_timeout)
        problems = opts.watchdog_problems(self.conf, timeout=got)
        if problems:
            self.feeder.device.close(disarm=True)
            raise watchdog.WatchdogError(f"watchdog {p.watchdog_device} took a timeout of "
                                         f"{got}s: " + "; ".join(problems))
        # The keep-alive loop evaluates isolation, the lease and the election (its stall
        # also stops the refreshes: lease_lost says so first); the reconcile loop is the
        # reporter's evaluation: stalled (a deadlock, an outbox write that never returns)
        # it would hold the election key, so no other host reports a failure. Either loop
        # making no progress for its bound stops the feeding: the host resets and its
        # lease, with the election key, expires.
        bound = opts.lease_bound(self.conf)
        self.feeder.watch("etcd-keepalive", bound)
        self.feeder.watch("etcd-reconcile", self._reconcile_wait() + bound)
        self.feeder.start()
        LOG.warning("watchdog %s armed (timeout %ss, lease bound %gs)", p.watchdog_device,
                    got, opts.lease_bound(self.conf))

    def watchdog_verdict(self) -> str | None:
        """Why the host must stop feeding its watchdog (etcd_decision.lease_lost)."""
        return lease_lost(dict(self.refreshed), self.started, time.monotonic(),
                          opts.lease_bound(self.conf))

    # -- liveness ---------------------------------------------------------------------------
    def _ttl(self) -> int:
        return self.conf[GROUP].etcd_lease_ttl

    def _link_ok(self, network: str) -> bool:
        last = self.last_ok.get(network)
        return last is not None and time.monotonic() - last < self._ttl() * 0.5 + 1

    def _interface_up(self) -> bool:
        dev = self.conf[GROUP].management_interface
        if not dev:
            return True
        try:
            with open(f"/sys/class/net/{dev}/operstate") as f:
                return f.read().strip() in ("up", "unknown")
        except OSError:
            return False

    def isolated(self) -> str | None:
        """Why this host must report nobody, or None."""
        if not self._interface_up():
            return f"management interface {self.conf[GROUP].management_interface} is down"
        if not self._link_ok(self.primary):
            return f"no etcd quorum on {self.primary} (own lease not refreshed)"
        return None

    def _refresh(self, network: str) -> None:
        client = self.clients[network]
        lease = self.leases.get(network)
        sent = time.monotonic()
        if lease is not None and lease.refresh() > 0:
            self.last_ok[network] = time.monotonic()
            self.refreshed[network] = sent
            return
        if lease is not None:
            LOG.warning("lease on %s expired; taking a new one", network)
            if network == self.primary:
                self.reporter = False
        lease = client.lease(self._ttl())
        value = json.dumps({"host": self.me, "since": time.time()})
        client.put(self.k("alive", network, self.me), value, lease)
        if network == self.primary:
            client.put(self.k("hosts", self.me), json.dumps({"registered": time.time()}))
        self.leases[network] = lease
        self.last_ok[network] = time.monotonic()
        self.refreshed[network] = sent

    def _keepalive_loop(self) -> None:
        while not self.stopping:
            if self.feeder is not None:
                self.feeder.mark("etcd-keepalive")
            for network, _ in self.networks:
                try:
                    self._refresh(network)
                except Exception as exc:  # noqa: BLE001 - etcd down/isolated: keep trying
                    LOG.warning("etcd on %s: lease refresh failed: %s", network, exc)
            try:
                self._elect()
            except Exception as exc:  # noqa: BLE001
                LOG.warning("etcd election: %s", exc)
                self.reporter = False
            why = self.isolated()
            self._detail = (f"isolated: {why}" if why else
                            ("reporter" if self.reporter else "member")
                            + f", {len(self.networks)} network(s)"
                            + (", MASS FAILURE (no reports)" if self.mass_failure else ""))
            self.sleep(max(self._ttl() / 3.0, 0.3))

    def _elect(self) -> None:
        mine = self._mine()
        if mine is None or self.isolated():
            self.reporter = False
            return
        was = self.reporter
        self.reporter, holder = election.claim(self.clients[self.primary], self.k("reporter"),
                                               mine, self.leases[self.primary], was)
        if was and not self.reporter:
            LOG.warning("no longer the reporter (held by %s)", holder or "nobody")
        if self.reporter and not was:
            log.event(LOG, logging.WARNING, "elected reporter of peer failures",
                      fields={"ROLE": "reporter"})
            self._takeover()
            self._kick.set()

    def _down_records(self, client) -> dict[str, dict]:
        records = {}
        for value, meta in client.get_prefix(self.k("down") + "/"):
            try:
                records[last_part(meta)] = json.loads(value)
            except ValueError:
                records[last_part(meta)] = {}
        return records

    def _takeover(self) -> None:
        """Re-send the previous reporter's recent reports (etcd_decision.to_resend)."""
        records = self._down_records(self.clients[self.primary])
        for host, rec in to_resend(records, self.me, time.time(),
                                   self.conf[GROUP].takeover_resend_window):
            result = self.emit(payloads.stopped(host, rec.get("host_status") == "NORMAL",
                                                rec.get("generated_time")),
                               decision={"driver": "etcd", "takeover_resend": True,
                                         "reported_by": rec.get("by")})
            LOG.warning("takeover: re-sent the report of %s made by %s (notification %s)",
                        host, rec.get("by"), result.id)

    # -- watch ------------------------------------------------------------------------------
    def _watch_loop(self) -> None:
        url = dict(self.networks)[self.primary]
        while not self.stopping:
            client = make_client(url, None)  # its own session: the stream never times out
            try:
                events, cancel = client.watch_prefix(self.k("alive") + "/")
                self._cancel_watch = cancel
                self._kick.set()  # compare once after (re)watching: nothing missed between
                for _event in events:
                    self.stats["watch_events"] += 1
                    self._kick.set()
                    if self.stopping:
                        break
            except Exception as exc:  # noqa: BLE001
                LOG.warning("etcd watch on %s ended: %s; again in 1 s", self.primary, exc)
            self.sleep(1.0)

    # -- the reporter's look ----------------------------------------------------------------
    def _reconcile_wait(self) -> float:
        return self.conf[GROUP].etcd_reconcile_interval or float(self._ttl())

    def _reconcile_loop(self) -> None:
        while not self.stopping:
            if self.feeder is not None:
                self.feeder.mark("etcd-reconcile")
            wait = self._reconcile_wait()
            due = self._due  # a waiting host is judged when it is due (or on any event)
            if due is not None:
                wait = min(wait, max(due - time.monotonic(), 0.05))
            self._kick.wait(wait)
            self._kick.clear()
            if due is not None and time.monotonic() >= due:
                self._due = None  # fired, as a one-shot timer would
            if self.stopping:
                return
            if not self.reporter:
                continue
            try:
                self.reconcile()
            except Exception as exc:  # noqa: BLE001 - no quorum, timeout: report nobody
                LOG.warning("peer comparison skipped: %s", exc)

    def reconcile(self) -> None:
        with self._lock:
            self._reconcile()

    def observe(self, client) -> View:
        """One look: whether to report at all, then the linearizable reads."""
        why = self.isolated()
        if why:
            return View(self.me, isolated=why)
        self.stats["reconciles"] += 1
        mine = self._mine()
        if mine is None or not election.holds(client, self.k("reporter"), mine):
            return View(self.me)
        hosts = {last_part(m) for _, m in client.get_prefix(self.k("hosts") + "/")}
        alive = {last_part(m) for _, m in client.get_prefix(self.k("alive") + "/")}
        return View(self.me, leader=True, hosts=frozenset(hosts), alive=frozenset(alive),
                    recorded=frozenset(self._down_records(client)),
                    pending=frozenset(self._held))

    def _reconcile(self) -> None:
        client = self.clients[self.primary]
        view = self.observe(client)
        policy = Policy.from_conf(self.conf)
        now = time.monotonic()
        d = decide(view, policy, self.memory, now)
        self.memory = d.memory
        if d.quiet is None:
            self._due = None if d.due is None else now + d.due
        if view.isolated:
            LOG.warning("reporting nobody: %s", view.isolated)
            return
        if not view.leader:
            self.reporter = False
            return
        if d.mass_failure_began:
            client.put(self.k("mass-failure"), json.dumps(
                {"down": sorted(d.down), "hosts": len(view.hosts), "at": time.time(),
                 "by": self.me}))
            log.event(LOG, logging.CRITICAL,
                      "MASS FAILURE: %d of %d hosts down (%s) exceeds "
                      "mass_failure_fraction %.2f: no evacuation requested; "
                      "operator action needed", len(d.down), len(view.hosts),
                      ",".join(sorted(d.down)), policy.mass_failure_fraction,
                      fields={"MASS_FAILURE": "1"})
        if d.mass_failure_ended:
            client.delete(self.k("mass-failure"))
            LOG.warning("mass failure over: %d of %d hosts down", len(d.down), len(view.hosts))
        if d.waiting and policy.deadline:
            LOG.info("keys of %s expired: waiting for the self-fence deadline "
                     "(etcd_self_fence_deadline %gs) before reporting", ",".join(d.waiting),
                     policy.deadline)
        for s in d.stopped:
            self._report_stopped(client, s, len(view.hosts), len(d.down))
        for host in d.started:
            self.emit(payloads.started(host), decision={"driver": "etcd", "reporter": self.me})
            self.stats["reports"] += 1
            client.delete(self.k("down", host))
        for host in d.forget:
            client.delete(self.k("down", host))  # host unregistered by the operator

    def _report_stopped(self, client, s, hosts: int, down: int) -> None:
        note = payloads.stopped(s.host, s.fenced)
        self._held.add(s.host)

        def stored(_result):
            # The shared "reported" record is written only once the report is durable:
            # until then (disk full) a restart, or another reporter, reports it again.
            self._held.discard(s.host)
            try:
                client.put(self.k("down", s.host), json.dumps(
                    {"by": self.me, "at": time.time(),
                     "host_status": note.payload["host_status"],
                     "generated_time": note.time_text}))
            except Exception as exc:  # noqa: BLE001 - reported again at the next look
                LOG.error("etcd: cannot record the report of %s: %s", s.host, exc)
        self.emit(note, decision={"driver": "etcd", "reporter": self.me, "hosts": hosts,
                                  "down": down, "fencing": s.evidence}, on_stored=stored)
        self.stats["reports"] += 1
