"""The local source: this node's links, storage and compute services → matrix → actions.

Observations are: every change of the link table pushed by netlink, every storage check
result that changes, and a periodic re-evaluation (``evaluation_interval``). A new set of
actions runs only after it held for ``[host] monitoring_samples`` consecutive
observations and ``[hostmonitor] hold_down`` seconds (damping); every role change is
logged, so flapping is visible in the history without being reported over and over.
This host's own verdict never says host_status NORMAL (only a fenced host may be
evacuated, and only the peers can confirm the fencing): report_host_failure sends
STOPPED/OFFLINE/UNKNOWN and asks for fencing through hostmonitor/fencing.py. The compute
column follows ha-processmonitor's verdicts (hostmonitor/compute.py).
What was sent (STOPPED to Masakari, the operator notice) is kept in
``<state_path>/hostmonitor-local.json`` so recovery sends STARTED even after a restart.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time

from monitors import log
from monitors.notification import COMPUTE_HOST, Notification
from monitors.source import Health

from hostmonitor import fencing, matrix as matrix_mod, opts
from hostmonitor.compute import ComputeColumn
from hostmonitor.kernel import KernelWatcher
from hostmonitor.links import DOWN, UP, LinkWatcher, roles_of
from hostmonitor.storage import StorageChecks

LOG = logging.getLogger(__name__)

# report_host_failure, this host's own verdict: never host_status NORMAL. NORMAL means
# "fenced, evacuate it" to Masakari, and a host that can still say so is not fenced: only
# the peers say NORMAL, once the cluster confirmed the fencing (hostmonitor/fencing.py).
UNFIT = {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "UNKNOWN"}
STARTED = {"event": "STARTED", "cluster_status": "ONLINE", "host_status": "NORMAL"}
# notify_operator: the host is still in the cluster, something it needs is lost.
OPERATOR_NOTICE = {"event": "STOPPED", "cluster_status": "ONLINE", "host_status": "UNKNOWN"}
# drain (degraded-host row): "take this host out of scheduling" / "put it back". Masakari
# would ignore both (host_status not NORMAL); they go to [hostmonitor] drain_driver only.
DRAIN_NOTICE = {"event": "STOPPED", "host_status": "UNKNOWN"}
DRAIN_RELEASE = {"event": "STARTED", "host_status": "UNKNOWN"}


class LocalHostSource:
    name = "local"

    def __init__(self, conf):
        self.conf = conf
        self.matrix = matrix_mod.from_conf(conf, opts.matrix_path(conf))
        self.storage = StorageChecks(conf)
        self.links = LinkWatcher(self._wake_up)
        self.kernel = KernelWatcher(conf, self._wake_up)  # kernel log + hardware: storage, host_health
        self.emit = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.storage_state, self.storage_results = UP, []
        self.row: dict[str, str] = {}
        self.flaps: dict[str, int] = {}
        self.candidate: tuple | None = None
        self.candidate_count = 0
        self.candidate_since = 0.0
        self.compute = ComputeColumn()
        self.fence_result: fencing.Result | None = None
        self.state_file = os.path.join(conf.state_path, "hostmonitor-local.json")
        self.state = self._load_state()
        # Detections the outbox has not taken yet (disk full...): until they are durable the
        # applied actions are not saved, so a restart meanwhile sends them again.
        self._unstored = 0
        self._save_lock = threading.Lock()

    # -- Source interface -------------------------------------------------------------------
    def start(self, emit) -> None:
        self.emit = emit
        self.links.start()
        if self.kernel:
            self.kernel.start(emit)
        self._spawn(self._evaluate_loop, "hm-evaluate")
        if self.storage:
            self._spawn(self._storage_loop, "hm-storage")
        self._wake_up()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.links.stop()
        self.kernel.stop()
        for t in self._threads:
            t.join(2.0)

    def reload(self, new_conf) -> None:
        problems = opts.check(new_conf)
        if problems:
            raise ValueError("; ".join(problems))
        new_matrix = matrix_mod.from_conf(new_conf, opts.matrix_path(new_conf))
        self.kernel.reload(new_conf)
        with self._lock:
            self.conf, self.matrix = new_conf, new_matrix
            self.storage = StorageChecks(new_conf)
        self._wake_up()

    def health(self) -> Health:
        if not self.links.alive:
            return Health(False, "netlink reader not running")
        row = " ".join(f"{k}={v}" for k, v in self.row.items()) or "starting"
        parts = [row, "actions " + (",".join(self.state["applied"]) or "none")]
        if self.candidate is not None:
            parts.append(f"pending {','.join(self.candidate) or 'none'} "
                         f"({self.candidate_count}/{self.conf.host.monitoring_samples})")
        if self.row.get("management") == DOWN:
            parts.append(f"management down: {self._held()} notifications pending")
        if self.fence_result is not None:
            r = self.fence_result
            parts.append(f"fencing {r.method} {'requested' if r.ok else 'FAILED'}: {r.detail}")
        if self.kernel.status():
            parts.append(self.kernel.status())
        if self.kernel.enabled and self.kernel.emit is not None and (
                self.kernel.error or not self.kernel.alive):
            return Health(False, "kernel log reader not running; " + ", ".join(parts))
        flaps = sum(self.flaps.values())
        if flaps:
            parts.append(f"{flaps} role changes")
        return Health(True, ", ".join(parts))

    # -- threads ----------------------------------------------------------------------------
    def _spawn(self, target, name) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _wake_up(self) -> None:
        self._wake.set()

    def _storage_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                checks = self.storage
                interval = self.conf.hostmonitor.storage_check_interval
            try:
                state, results = checks.run()
            except Exception:  # noqa: BLE001
                LOG.exception("storage checks failed")
                state, results = DOWN, []
            changed = state != self.storage_state
            self.storage_state, self.storage_results = state, results
            if changed:
                LOG.warning("storage checks: %s (%s)", state,
                            "; ".join(f"{r.name}: {r.state} {r.detail}" for r in results))
                self._wake_up()
            self._stop.wait(interval)

    def _evaluate_loop(self) -> None:
        while not self._stop.is_set():
            timeout = self.conf.hostmonitor.evaluation_interval
            if self.candidate is not None and self.conf.hostmonitor.hold_down:
                left = self.candidate_since + self.conf.hostmonitor.hold_down - time.monotonic()
                timeout = max(0.01, min(timeout, left + 0.01))
            pushed = self._wake.wait(timeout)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.observe(periodic=not pushed)
            except Exception:  # noqa: BLE001 - one bad evaluation never stops the loop
                LOG.exception("evaluation failed")

    # -- decision ---------------------------------------------------------------------------
    def current_row(self) -> tuple[dict[str, str], dict]:
        with self._lock:
            conf = self.conf
        names = roles_of(conf)
        row = {role: self.links.role_state(names[role]) for role in ("management", "tenant")}
        link_storage = self.links.role_state(names["storage"])
        row["storage"] = max(link_storage, self.storage_state, key=_severity)
        row["compute"], compute = self.compute.state(
            list(conf.hostmonitor.compute_processes), conf.hostmonitor.compute_restart_window,
            getattr(self.emit, "outbox", None), conf.hostname)
        kernel_storage, kernel_storage_evidence = self.kernel.storage()
        row["storage"] = max(row["storage"], kernel_storage, key=_severity)
        row["host_health"], health_evidence = self.kernel.health()
        evidence = {"interfaces": {role: self.links.details(n) for role, n in names.items()
                                   if n},
                    "storage_checks": [f"{r.name}: {r.state} {r.detail}"
                                       for r in self.storage_results]}
        if compute:
            evidence["compute"] = compute
        if kernel_storage_evidence:
            evidence["storage_kernel"] = kernel_storage_evidence
        if health_evidence:
            evidence["host_health"] = health_evidence
        return row, evidence

    def observe(self, periodic: bool = True) -> None:
        """One observation: compute the row, damp, act. A pushed change that leaves the
        row as it was (one link change often brings several netlink messages) is not
        an observation; a periodic re-evaluation always is."""
        row, evidence = self.current_row()
        if not periodic and row == self.row and self.candidate is not None:
            return
        for role, state in row.items():
            old = self.row.get(role)
            if old is not None and old != state:
                self.flaps[role] = self.flaps.get(role, 0) + 1
                log.event(LOG, logging.WARNING if state != UP else logging.INFO,
                          "%s: %s -> %s", role, old, state,
                          fields={"ROLE": role, "ROLE_STATE": state,
                                  "HOSTNAME": self.conf.hostname})
        self.row = row
        with self._lock:
            actions, rule = self.matrix.lookup(row)
        samples = self.conf.host.monitoring_samples
        hold = self.conf.hostmonitor.hold_down
        if tuple(actions) == tuple(self.state["applied"]):
            if self.candidate is not None:
                LOG.info("condition %s cleared after %d observation(s): nothing sent",
                         ",".join(self.candidate) or "none", self.candidate_count)
            self.candidate = None
            return
        now = time.monotonic()
        if self.candidate != tuple(actions):
            self.candidate, self.candidate_count, self.candidate_since = tuple(actions), 1, now
        else:
            self.candidate_count += 1
        if self.candidate_count < samples or now - self.candidate_since < hold:
            LOG.info("row %s → %s (%s): observation %d/%d, held %.1fs/%.1fs", row,
                     ",".join(actions) or "none", rule, self.candidate_count, samples,
                     now - self.candidate_since, hold)
            return
        decision = {"row": row, "rule": rule, "actions": list(actions) or ["none"],
                    "observations": self.candidate_count,
                    "held_seconds": round(now - self.candidate_since, 3), **evidence}
        self.candidate = None
        self.apply(tuple(actions), decision)

    def apply(self, actions: tuple[str, ...], decision: dict) -> None:
        # The outbox delivers per host in order: a STARTED never overtakes its STOPPED.
        sent = self.state["sent"]
        operator = self.conf.hostmonitor.operator_driver
        self._drain(actions, decision, sent)
        if matrix_mod.REPORT in actions and not sent.get("report"):
            self.report_unfit(decision)
            sent["report"] = True
        elif matrix_mod.REPORT not in actions and sent.get("report"):
            self._send(STARTED, None, decision, "recovery")
            sent["report"] = False
        if matrix_mod.NOTIFY in actions and not sent.get("notify"):
            if operator:
                self._send(OPERATOR_NOTICE, [operator], decision, "notify_operator")
                sent["notify"] = True
            else:
                log.event(LOG, logging.WARNING, "notify_operator: %s (no [hostmonitor] "
                          "operator_driver configured: logged only)", decision["row"],
                          fields={"ACTION": "notify_operator"})
        elif matrix_mod.NOTIFY not in actions and sent.get("notify"):
            self._send(STARTED, [operator] if operator else None, decision,
                       "notify_operator recovery")
            sent["notify"] = False
        self.state["applied"] = list(actions)
        self._save_state()

    def report_unfit(self, decision: dict) -> None:
        """This host is unfit: STOPPED/OFFLINE/UNKNOWN to every driver (the operator
        driver is one of them), then ask the cluster to fence it. Masakari records the
        UNKNOWN and recovers nothing; the evacuation waits for the peers' NORMAL, which
        they send only once the fencing is confirmed."""
        how = fencing.method(self.conf)
        if how == fencing.PACEMAKER:
            plan = {"method": how, "request": " ".join(fencing.pacemaker_argv(self.conf)),
                    "normal_from": "the peers, after Pacemaker's fencing history"}
        elif how == fencing.ETCD:
            plan = {"method": how, "request": "self-fence, then give up the etcd leases",
                    "normal_from": "the etcd reporter, after the lease expired and "
                                   "etcd_self_fence_deadline passed"}
        else:
            plan = {"method": "none", "request": "none: operator action needed"}
        nid = self._send(UNFIT, None, {**decision, "fencing": plan}, "report_host_failure")
        if how == fencing.NONE:
            log.event(LOG, logging.CRITICAL, "report_host_failure: this host is unfit (%s) "
                      "and no fencing is configured ([hostmonitor] fencing = none): "
                      "notification %s says host_status UNKNOWN, so Masakari evacuates "
                      "nothing; operator action needed", decision["row"], nid,
                      fields={"ACTION": "report_host_failure", "NOTIFICATION_ID": nid,
                              "FENCING": "none"})
            return
        thread = threading.Thread(target=self._fence, args=(self.conf, nid),
                                  name="hm-fence", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _fence(self, conf, nid: int) -> None:
        give_up = None
        if fencing.method(conf) == fencing.ETCD:
            from hostmonitor.peers import etcd as etcd_peers

            def give_up():
                etcd_peers.give_up_leases(conf)
        try:
            result = fencing.request(conf, give_up_leases=give_up)
        except Exception as exc:  # noqa: BLE001 - a fencing bug must be loud, not fatal
            LOG.exception("fencing request failed")
            result = fencing.Result(fencing.method(conf), False, "", f"error: {exc}")
        self.fence_result = result
        outbox = getattr(self.emit, "outbox", None)
        if outbox is not None:
            try:
                outbox.note(nid, "fencing", result.as_dict())
            except Exception as exc:  # noqa: BLE001
                LOG.warning("cannot record the fencing request in the outbox: %s", exc)
        fields = {"ACTION": "fence", "FENCING": result.method, "NOTIFICATION_ID": nid}
        if result.ok:
            log.event(LOG, logging.CRITICAL, "fencing of this host requested (%s): %s: %s",
                      result.method, result.action, result.detail, fields=fields)
        else:
            log.event(LOG, logging.CRITICAL, "fencing of this host FAILED (%s): %s: %s; "
                      "nothing will evacuate it: operator action needed", result.method,
                      result.action, result.detail, fields=fields)

    def _drain(self, actions, decision, sent) -> None:
        """The degraded-host row's drain, through ``drain_driver`` only: DRAIN_NOTICE
        ("stop scheduling onto this host"), DRAIN_RELEASE when the row clears. Their
        payloads differ from the operator notice's, so neither is ever taken for a repeat
        of the other by the outbox's deduplication."""
        drain = self.conf.hostmonitor.drain_driver
        if matrix_mod.DRAIN in actions and not sent.get("drain"):
            if not drain:
                log.event(LOG, logging.WARNING, "drain: host degraded %s (no [hostmonitor] "
                          "drain_driver configured: logged only)", decision.get("host_health"),
                          fields={"ACTION": "drain"})
                return
            self._send(DRAIN_NOTICE, [drain], decision, "drain")
            sent["drain"] = True
        elif matrix_mod.DRAIN not in actions and sent.get("drain"):
            if drain:
                self._send(DRAIN_RELEASE, [drain], decision, "drain recovery")
            sent["drain"] = False

    def _send(self, payload, drivers, decision, what) -> int:
        notification = Notification.create(COMPUTE_HOST, self.conf.hostname, payload)
        with self._save_lock:
            self._unstored += 1
        result = self.emit(notification, decision={**decision, "action": what},
                           drivers=drivers, on_stored=self._stored)
        shown = result.id if result.id is not None else "(held in memory: outbox not writable)"
        if self.row.get("management") == DOWN:
            # Not "held": the API may be reachable another way, and the delivery worker
            # sends as soon as it answers. Say what is true: durable, sent when possible.
            log.event(LOG, logging.WARNING, "%s: management network down: notification %s "
                      "is queued in the outbox and delivered as soon as the API answers "
                      "(%d pending)", what, shown, self._held(),
                      fields={**notification.subject(), "NOTIFICATION_ID": result.id,
                              "ACTION": what})
        else:
            log.event(LOG, logging.WARNING, "%s for %s: notification %s (row %s)", what,
                      self.conf.hostname, shown, decision["row"],
                      fields={**notification.subject(), "NOTIFICATION_ID": result.id,
                              "ACTION": what, "RULE": decision.get("rule")})
        return result.id

    def _stored(self) -> None:
        with self._save_lock:
            self._unstored -= 1
            late = self._unstored == 0 and self._save_deferred
        if late:
            self._save_state()

    _save_deferred = False

    def threads(self) -> list[threading.Thread]:
        """The evaluation and storage loops must stay alive (watchdog)."""
        return list(self._threads)

    def _held(self) -> int:
        outbox = getattr(self.emit, "outbox", None)
        try:
            from monitors.history import ReadModel

            return ReadModel(outbox).depth() if outbox else 0
        except Exception:  # noqa: BLE001
            return -1

    # -- durable state ----------------------------------------------------------------------
    def _load_state(self) -> dict:
        try:
            with open(self.state_file, encoding="utf-8") as f:
                doc = json.load(f)
            return {"applied": list(doc.get("applied", [])), "sent": dict(doc.get("sent", {}))}
        except (OSError, ValueError):
            return {"applied": [], "sent": {}}

    def _save_state(self) -> None:
        with self._save_lock:
            self._save_deferred = self._unstored > 0
            if self._save_deferred:
                LOG.warning("applied actions not saved until the outbox has taken the "
                            "notification (a restart meanwhile sends it again)")
                return
        tmp = self.state_file + ".tmp"
        try:
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                json.dump({**self.state, "row": self.row, "updated_at": time.time()}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_file)
        except OSError as exc:
            LOG.warning("cannot write %s: %s", self.state_file, exc)


def _severity(state: str) -> int:
    return {"up": 0, "degraded": 1, "down": 2}[state]
