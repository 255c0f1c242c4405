"""The local source: this node's links, storage and compute services → matrix → actions.

Observations are: every change of the link table pushed by netlink, every storage check
result that changes, and a periodic re-evaluation (``evaluation_interval``). A new set of
actions runs only after it held for ``[host] monitoring_samples`` consecutive
observations and ``[hostmonitor] hold_down`` seconds (damping); every role change is
logged, so flapping is visible in the history without being reported over and over.
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
from monitors.service import Health

from hostmonitor import matrix as matrix_mod, opts
from hostmonitor.kernel import KernelWatcher
from hostmonitor.links import DOWN, UP, LinkWatcher, roles_of
from hostmonitor.storage import StorageChecks

LOG = logging.getLogger(__name__)

STOPPED = {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "NORMAL"}
STARTED = {"event": "STARTED", "cluster_status": "ONLINE", "host_status": "NORMAL"}
# notify_operator: the host is still in the cluster, something it needs is lost.
OPERATOR_NOTICE = {"event": "STOPPED", "cluster_status": "ONLINE", "host_status": "UNKNOWN"}
# drain (degraded-host row): "take this host out of scheduling" / "put it back". Masakari
# would ignore both (host_status not NORMAL); they go to [hostmonitor] drain_driver only.
DRAIN_NOTICE = {"event": "STOPPED", "host_status": "UNKNOWN"}
DRAIN_RELEASE = {"event": "STARTED", "host_status": "UNKNOWN"}


def compute_state(names: list[str]) -> tuple[str, list[str]]:
    """up when every configured compute process runs (zombies do not count)."""
    if not names:
        return UP, []
    import psutil

    wanted, found = set(names), set()
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        info = proc.info
        if info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        candidates = {info.get("name") or ""}
        candidates |= {os.path.basename(a) for a in (info.get("cmdline") or [])[:3]}
        found |= wanted & candidates
    missing = sorted(wanted - found)
    return (DOWN if missing else UP), missing


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
        self.state_file = os.path.join(conf.state_path, "hostmonitor-local.json")
        self.state = self._load_state()

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
            parts.append(f"management down: {self._held()} notifications held")
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
        row["compute"], missing = compute_state(list(conf.hostmonitor.compute_processes))
        kernel_storage, kernel_storage_evidence = self.kernel.storage()
        row["storage"] = max(row["storage"], kernel_storage, key=_severity)
        row["host_health"], health_evidence = self.kernel.health()
        evidence = {"interfaces": {role: self.links.details(n) for role, n in names.items()
                                   if n},
                    "storage_checks": [f"{r.name}: {r.state} {r.detail}"
                                       for r in self.storage_results]}
        if missing:
            evidence["compute_missing"] = missing
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
            self._send(STOPPED, None, decision, "report_host_failure")
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
        result = self.emit(notification, decision={**decision, "action": what},
                           drivers=drivers)
        if self.row.get("management") == DOWN:
            log.event(LOG, logging.WARNING, "%s: management network down: notification %s "
                      "held in the outbox until it returns (%d held)", what, result.id,
                      self._held(), fields={**notification.subject(),
                                            "NOTIFICATION_ID": result.id, "ACTION": what})
        else:
            log.event(LOG, logging.WARNING, "%s for %s: notification %s (row %s)", what,
                      self.conf.hostname, result.id, decision["row"],
                      fields={**notification.subject(), "NOTIFICATION_ID": result.id,
                              "ACTION": what, "RULE": decision.get("rule")})
        return result.id

    def _held(self) -> int:
        outbox = getattr(self.emit, "outbox", None)
        try:
            return outbox.depth() if outbox else 0
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
