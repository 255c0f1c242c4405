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

Every daemon keeps its keys alive and watches ``P/alive/``; only the reporter compares the
registered hosts with the live keys (on each watch event, and every etcd_reconcile_interval
as a safety net) and emits STOPPED for a newly missing host and STARTED for a returning one.
Safety: the comparison uses linearizable reads (they fail without etcd quorum), the reporter
re-checks it still holds the election key, and a host whose own lease refresh failed for the
management network (or whose management_interface is down) reports nobody — it is the
isolated one. More than mass_failure_fraction of hosts down at once is an operator alert,
not an evacuation.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse

import etcd3gw

from monitors import log
from monitors.source import Health

from hostmonitor import payloads
from hostmonitor.peers.opts import GROUP

LOG = logging.getLogger(__name__)


def make_client(url: str, timeout: float | None) -> etcd3gw.Etcd3Client:
    parts = urllib.parse.urlsplit(url)
    return etcd3gw.Etcd3Client(host=parts.hostname or "127.0.0.1", port=parts.port or 2379,
                               protocol=parts.scheme or "http", timeout=timeout,
                               api_path="/v3/")


def _key(meta) -> str:
    key = meta["key"]
    return key.decode() if isinstance(key, bytes) else key


class EtcdPeers:
    """The etcd peer driver as a daemon source."""

    name = "etcd"

    def __init__(self, conf):
        self.conf = conf
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
        self.mass_failure = False
        self.emit = None
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._cancel_watch = None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._detail = "starting"
        self.first_seen: dict[str, float] = {}
        self.stats = {"reports": 0, "reconciles": 0, "watch_events": 0}
        self._held: set[str] = set()  # reports the outbox has not taken yet

    # -- keys -------------------------------------------------------------------------------
    def k(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    # -- Source interface -------------------------------------------------------------------
    def start(self, emit) -> None:
        self.emit = emit
        for target, name in ((self._keepalive_loop, "etcd-keepalive"),
                             (self._watch_loop, "etcd-watch"),
                             (self._reconcile_loop, "etcd-reconcile")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._cancel_watch:
            try:
                self._cancel_watch()
            except Exception:  # noqa: BLE001
                pass
        for t in self._threads:
            t.join(self.conf[GROUP].etcd_timeout + 1)
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
        self.conf = conf

    def health(self) -> Health:
        ok = self._link_ok(self.primary) and not self.mass_failure
        return Health(ok, self._detail)

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
        if lease is not None and lease.refresh() > 0:
            self.last_ok[network] = time.monotonic()
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

    def _keepalive_loop(self) -> None:
        while not self._stop.is_set():
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
            self._stop.wait(max(self._ttl() / 3.0, 0.3))

    def _elect(self) -> None:
        """Create-if-absent of P/reporter bound to our lease; value ``host:lease`` so a
        transient error never makes us forget that we hold it."""
        lease = self.leases.get(self.primary)
        if lease is None or self.isolated():
            self.reporter = False
            return
        client = self.clients[self.primary]
        mine = f"{self.me}:{lease.id}"
        was = self.reporter
        if not was and client.create(self.k("reporter"), mine, lease):
            self.reporter = True
        else:
            holder = client.get(self.k("reporter"))
            self.reporter = bool(holder) and holder[0].decode() == mine
            if was and not self.reporter:
                LOG.warning("no longer the reporter (held by %s)",
                            holder[0].decode() if holder else "nobody")
        if self.reporter and not was:
            log.event(LOG, logging.WARNING, "elected reporter of peer failures",
                      fields={"ROLE": "reporter"})
            self._takeover()
            self._kick.set()

    def _takeover(self) -> None:
        """Re-send the previous reporter's recent reports: one it queued but could not
        deliver before dying is not lost (Masakari answers 409 to a duplicate)."""
        window = self.conf[GROUP].takeover_resend_window
        client = self.clients[self.primary]
        for value, meta in client.get_prefix(self.k("down") + "/"):
            try:
                rec = json.loads(value)
            except ValueError:
                continue
            if rec.get("by") == self.me or time.time() - rec.get("at", 0) > window:
                continue
            host = _key(meta).rsplit("/", 1)[-1]
            result = self.emit(payloads.stopped(host, rec.get("host_status") == "NORMAL",
                                                rec.get("generated_time")),
                               decision={"driver": "etcd", "takeover_resend": True,
                                         "reported_by": rec.get("by")})
            LOG.warning("takeover: re-sent the report of %s made by %s (notification %s)",
                        host, rec.get("by"), result.id)

    # -- watch ------------------------------------------------------------------------------
    def _watch_loop(self) -> None:
        url = dict(self.networks)[self.primary]
        while not self._stop.is_set():
            client = make_client(url, None)  # its own session: the stream never times out
            try:
                events, cancel = client.watch_prefix(self.k("alive") + "/")
                self._cancel_watch = cancel
                self._kick.set()  # compare once after (re)watching: nothing missed between
                for _event in events:
                    self.stats["watch_events"] += 1
                    self._kick.set()
                    if self._stop.is_set():
                        break
            except Exception as exc:  # noqa: BLE001
                LOG.warning("etcd watch on %s ended: %s; again in 1 s", self.primary, exc)
            self._stop.wait(1.0)

    # -- decision (reporter only) -----------------------------------------------------------
    def _reconcile_loop(self) -> None:
        while not self._stop.is_set():
            interval = self.conf[GROUP].etcd_reconcile_interval or float(self._ttl())
            self._kick.wait(interval)
            self._kick.clear()
            if self._stop.is_set():
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

    def _reconcile(self) -> None:
        why = self.isolated()
        if why:
            LOG.warning("reporting nobody: %s", why)
            return
        self.stats["reconciles"] += 1
        p, host_conf = self.conf[GROUP], self.conf.host
        client = self.clients[self.primary]
        holder = client.get(self.k("reporter"))  # linearizable: fails without quorum
        lease = self.leases.get(self.primary)
        if not holder or lease is None or holder[0].decode() != f"{self.me}:{lease.id}":
            self.reporter = False
            return
        hosts = {_key(m).rsplit("/", 1)[-1] for _, m in client.get_prefix(self.k("hosts") + "/")}
        alive = {_key(m).rsplit("/", 1)[-1] for _, m in client.get_prefix(self.k("alive") + "/")}
        down_recs = {}
        for value, meta in client.get_prefix(self.k("down") + "/"):
            try:
                down_recs[_key(meta).rsplit("/", 1)[-1]] = json.loads(value)
            except ValueError:
                down_recs[_key(meta).rsplit("/", 1)[-1]] = {}
        down_now = hosts - alive - {self.me}
        now = time.monotonic()
        self.first_seen = {h: self.first_seen.get(h, now) for h in down_now}
        if hosts and len(down_now) > p.mass_failure_fraction * len(hosts):
            if not self.mass_failure:
                self.mass_failure = True
                client.put(self.k("mass-failure"), json.dumps(
                    {"down": sorted(down_now), "hosts": len(hosts), "at": time.time(),
                     "by": self.me}))
                log.event(LOG, logging.CRITICAL,
                          "MASS FAILURE: %d of %d hosts down (%s) exceeds "
                          "mass_failure_fraction %.2f: no evacuation requested; "
                          "operator action needed", len(down_now), len(hosts),
                          ",".join(sorted(down_now)), p.mass_failure_fraction,
                          fields={"MASS_FAILURE": "1"})
            return
        if self.mass_failure:
            self.mass_failure = False
            client.delete(self.k("mass-failure"))
            LOG.warning("mass failure over: %d of %d hosts down", len(down_now), len(hosts))
        fenced = host_conf.disable_ipmi_check
        deadline = 0.0 if fenced else p.etcd_self_fence_deadline
        # A host is judged once it settled and, with self-fencing, once its self-fence
        # deadline passed (counted from when this reporter saw its keys gone: a new
        # reporter starts counting again, which only delays).
        wait = max(p.settle_time, deadline)
        waiting = [h for h in down_now - down_recs.keys() if now - self.first_seen[h] < wait]
        if waiting:  # judged again when the first of them is due (timer), or on any event
            due = min(self.first_seen[h] + wait - now for h in waiting)
            timer = threading.Timer(max(due, 0.05), self._kick.set)
            timer.daemon = True
            timer.start()
            if deadline:
                LOG.info("keys of %s expired: waiting for the self-fence deadline "
                         "(etcd_self_fence_deadline %gs) before reporting", ",".join(
                             sorted(waiting)), deadline)
        for host in sorted(down_now - down_recs.keys() - set(waiting) - self._held):
            if fenced:
                evidence = "not required (disable_ipmi_check)"
            elif deadline:
                evidence = (f"self-fenced: keys expired {now - self.first_seen[host]:.1f}s "
                            f"ago, etcd_self_fence_deadline {deadline:g}s passed")
            else:
                evidence = "not confirmed (etcd has no fencing): UNKNOWN"
            note = payloads.stopped(host, fenced or bool(deadline))
            self._held.add(host)

            def stored(host=host, note=note):
                # The shared "reported" record is written only once the report is durable:
                # until then (disk full) a restart, or another reporter, reports it again.
                self._held.discard(host)
                try:
                    client.put(self.k("down", host), json.dumps(
                        {"by": self.me, "at": time.time(),
                         "host_status": note.payload["host_status"],
                         "generated_time": note.time_text}))
                except Exception as exc:  # noqa: BLE001 - reported again at the next look
                    LOG.error("etcd: cannot record the report of %s: %s", host, exc)
            self.emit(note, decision={
                "driver": "etcd", "reporter": self.me, "hosts": len(hosts),
                "down": len(down_now), "fencing": evidence}, on_stored=stored)
            self.stats["reports"] += 1
        for host in sorted(down_recs.keys() & alive):
            self.emit(payloads.started(host), decision={"driver": "etcd", "reporter": self.me})
            self.stats["reports"] += 1
            client.delete(self.k("down", host))
        for host in sorted(down_recs.keys() - hosts):
            client.delete(self.k("down", host))  # host unregistered by the operator


def give_up_leases(conf) -> list[str]:
    """Revoke this host's liveness leases on every network (after its self-fence
    succeeded): the peers see it gone at once instead of after the TTL. Returns the keys
    whose lease was revoked."""
    p = conf[GROUP]
    prefix = p.etcd_prefix.rstrip("/")
    done = []
    for network, url in p.etcd_networks.items():
        client = make_client(url, p.etcd_timeout)
        key = "/".join((prefix, "alive", network, conf.hostname))
        for _value, meta in client.get(key, metadata=True):
            lease = int(meta.get("lease") or 0)
            if lease:
                etcd3gw.Lease(lease, client).revoke()
                done.append(key)
    LOG.warning("self-fenced: gave up the etcd leases of %s", ", ".join(done) or "nothing")
    return done
