"""The local source: this node's links, storage and compute services → matrix → actions.

Observations are: every change of the link table pushed by netlink (hostmonitor/links.py),
every storage check result that changes (hostmonitor/storage.py, periodic: no event says
"the NFS server stopped answering"), every kernel-log or hardware finding
(hostmonitor/kernel.py), and a periodic re-evaluation (``evaluation_interval``). Each
observation gives the matrix's row (management, tenant, storage, compute, host_health) and
its actions (hostmonitor/matrix.py). A new set of actions is carried out only after it held
for ``[host] monitoring_samples`` consecutive observations and ``[hostmonitor] hold_down``
seconds (hostmonitor/damper.py); every role change is logged and counted, so flapping is
visible without being reported over and over. Carrying out the actions (notifications,
the fencing request, what was sent) is hostmonitor/reporter.py's job.

The compute column follows ha-processmonitor's verdicts (hostmonitor/compute.py). Enabled
when any interface role or storage check is configured (``compute_processes`` alone, which
has a default, does not enable it).
"""
from __future__ import annotations

import logging
import os
import threading

from monitors import log
from monitors.source import Health, Source

from hostmonitor import matrix as matrix_mod, opts
from hostmonitor.compute import ComputeColumn
from hostmonitor.damper import Damper
from hostmonitor.kernel import KernelWatcher
from hostmonitor.links import DOWN, UP, LinkWatcher, roles_of
from hostmonitor.reporter import Reporter
from hostmonitor.storage import StorageChecks

LOG = logging.getLogger(__name__)

ACTIONS = "actions"  # the damper's key for the matrix's actions
WATCHED = ("hm-evaluate", "hm-storage")  # loops the watchdog waits for (see threads())


class LocalSource(Source):
    name = "local"

    @classmethod
    def enabled(cls, conf) -> bool:
        hm = conf.hostmonitor
        return bool(hm.management_interfaces or hm.tenant_interfaces or hm.storage_interfaces
                    or hm.storage_paths or hm.iscsi_sessions or hm.fc_hosts
                    or hm.multipath_devices)

    def __init__(self, conf, emit):
        super().__init__(conf, emit)
        self.matrix = matrix_mod.from_conf(conf, opts.matrix_path(conf))
        self.storage = StorageChecks(conf)
        self.links = LinkWatcher(self._wake_up)
        # kernel log + hardware: the storage and host_health inputs, VM notifications
        self.kernel = KernelWatcher(conf, self._wake_up, emit)
        self.compute = ComputeColumn()
        self.reporter = Reporter(conf, emit, os.path.join(conf.state_path,
                                                          "hostmonitor-local.json"), self.spawn)
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self.storage_state, self.storage_results = UP, []
        self.row: dict[str, str] = {}
        # the matrix's actions are damped; role changes are counted (flaps), not damped
        self.damper = Damper(conf.host.monitoring_samples, conf.hostmonitor.hold_down)
        self.roles = Damper()

    # -- Source interface -------------------------------------------------------------------
    def start(self) -> None:
        self.links.start(self)
        if self.kernel:
            self.kernel.start(self)
        self.spawn(self._evaluate_loop, "hm-evaluate")
        if self.storage:
            self.spawn(self._storage_loop, "hm-storage")
        self._wake_up()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        self.kernel.wake_up()
        super().stop(timeout)
        self.kernel.close()

    def reload(self, conf) -> None:
        problems = opts.check(conf)
        if problems:
            raise ValueError("; ".join(problems))
        new_matrix = matrix_mod.from_conf(conf, opts.matrix_path(conf))
        self.kernel.reload(conf)
        with self._lock:
            self.conf, self.matrix = conf, new_matrix
            self.storage = StorageChecks(conf)
            self.reporter.conf = conf
        self._wake_up()

    def health(self) -> Health:
        if not self.links.alive:
            return Health(False, "netlink reader not running")
        reporter = self.reporter
        row = " ".join(f"{k}={v}" for k, v in self.row.items()) or "starting"
        parts = [row, "actions " + (",".join(reporter.applied) or "none")]
        pending = self.pending()
        if pending is not None:
            parts.append(f"pending {','.join(pending.value) or 'none'} "
                         f"({pending.count}/{self.conf.host.monitoring_samples})")
        if self.row.get("management") == DOWN:
            parts.append(f"management down: {reporter.queued_while_unreachable} "
                         "notifications pending")
        if reporter.fence_result is not None:
            r = reporter.fence_result
            parts.append(f"fencing {r.method} {'requested' if r.ok else 'FAILED'}: {r.detail}")
        if self.kernel.status():
            parts.append(self.kernel.status())
        if self.kernel.enabled and self.kernel.started and (
                self.kernel.error or not self.kernel.alive):
            return Health(False, "kernel log reader not running; " + ", ".join(parts))
        flaps = self.roles.flap_total()
        if flaps:
            parts.append(f"{flaps} role changes")
        return Health(True, ", ".join(parts))

    def threads(self) -> list[threading.Thread]:
        """The evaluation and storage loops must stay alive (watchdog). The netlink and
        kernel-log readers are judged by health(); the fencing request ends by design."""
        return [t for t in super().threads() if t.name in WATCHED]

    # -- loops ------------------------------------------------------------------------------
    def _wake_up(self) -> None:
        self._wake.set()

    def _storage_loop(self) -> None:
        while not self.stopping:
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
            self.sleep(interval)

    def _evaluate_loop(self) -> None:
        while not self.stopping:
            timeout = self.conf.hostmonitor.evaluation_interval
            if self.pending() is not None and self.conf.hostmonitor.hold_down:
                timeout = max(0.01, min(timeout, self.damper.wait_left(ACTIONS) + 0.01))
            pushed = self._wake.wait(timeout)
            self._wake.clear()
            if self.stopping:
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
            conf.state_path)
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

    def pending(self):
        """The damper's streak of actions that differ from the applied ones, or None."""
        streak = self.damper.streak(ACTIONS)
        if streak is None or streak.value == self.reporter.applied:
            return None
        return streak

    def observe(self, periodic: bool = True) -> None:
        """One observation: compute the row, damp, act. A pushed change that leaves the
        row as it was (one link change often brings several netlink messages) is not
        an observation; a periodic re-evaluation always is."""
        row, evidence = self.current_row()
        if not periodic and row == self.row and self.pending() is not None:
            return
        for role, state in row.items():
            old = self.roles.streak(role)
            if self.roles.observe(role, state).changed:
                log.event(LOG, logging.WARNING if state != UP else logging.INFO,
                          "%s: %s -> %s", role, old.value, state,
                          fields={"ROLE": role, "ROLE_STATE": state,
                                  "HOSTNAME": self.conf.hostname})
        self.row = row
        self.reporter.observed(row)
        with self._lock:
            actions, rule = self.matrix.lookup(row)
        samples = self.conf.host.monitoring_samples
        hold = self.conf.hostmonitor.hold_down
        self.damper.configure(samples, hold)
        was = self.pending()
        streak = self.damper.observe(ACTIONS, tuple(actions))
        if streak.value == self.reporter.applied:
            if was is not None:
                LOG.info("condition %s cleared after %d observation(s): nothing sent",
                         ",".join(was.value) or "none", was.count)
            return
        held = self.damper.held(ACTIONS)
        if not self.damper.settled(ACTIONS):
            LOG.info("row %s → %s (%s): observation %d/%d, held %.1fs/%.1fs", row,
                     ",".join(actions) or "none", rule, streak.count, samples, held, hold)
            return
        decision = {"row": row, "rule": rule, "actions": list(actions) or ["none"],
                    "observations": streak.count, "held_seconds": round(held, 3),
                    **evidence}
        self.reporter.apply(tuple(actions), decision)


def _severity(state: str) -> int:
    return {"up": 0, "degraded": 1, "down": 2}[state]
