"""The local source's second job: carry out the matrix's actions once they are damped.

hostmonitor/local_source.py decides *which* actions hold; this module turns a change of
them into notifications (payloads from hostmonitor/payloads.py), asks for this host's
fencing, and remembers what it sent so that recovery sends STARTED even after a restart:

* report_host_failure → STOPPED/OFFLINE/UNKNOWN to every driver, then the fencing request
  (hostmonitor/fencing.py). Never host_status NORMAL: only the peers may say it, once the
  cluster confirmed the fencing. Cleared → STARTED/ONLINE/NORMAL.
* notify_operator → STOPPED/ONLINE/UNKNOWN to ``[hostmonitor] operator_driver``.
* drain → the drain payloads to ``[hostmonitor] drain_driver`` only.

What was sent is kept in ``<state_path>/hostmonitor-local.json`` (monitors/statefile.py),
and only once the outbox holds the notification: a detection held in memory (disk full)
is sent again after a restart rather than forgotten.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from monitors import log, statefile

from hostmonitor import fencing, matrix as matrix_mod, payloads
from hostmonitor.links import DOWN

LOG = logging.getLogger(__name__)


class Reporter:
    def __init__(self, conf, emit, state_file: str, spawn: Callable):
        self.conf = conf
        self.emit = emit
        self.state_file = state_file
        self._spawn = spawn  # the owning source's: the fencing request is one of its threads
        self.state = self._load_state()
        self.row: dict[str, str] = {}
        self.fence_result: fencing.Result | None = None
        # Notifications this source queued since the management network (the API's usual
        # path) went down: what the log and the status say is waiting for it.
        self.queued_while_unreachable = 0
        # Detections the outbox has not taken yet (disk full...): until they are durable the
        # applied actions are not saved, so a restart meanwhile sends them again.
        self._unstored = 0
        self._save_deferred = False
        self._save_lock = threading.Lock()

    @property
    def applied(self) -> tuple[str, ...]:
        return tuple(self.state["applied"])

    def observed(self, row: dict[str, str]) -> None:
        """The row of the latest observation (saved with the state; the management state
        tells whether the API is reachable the usual way)."""
        self.row = row
        if row.get("management") != DOWN:
            self.queued_while_unreachable = 0

    def apply(self, actions: tuple[str, ...], decision: dict) -> None:
        """Send what changes from the applied actions to ``actions`` and remember it.
        The outbox delivers per host in order: a STARTED never overtakes its STOPPED."""
        sent = self.state["sent"]
        operator = self.conf.hostmonitor.operator_driver
        host = self.conf.hostname
        self._drain(actions, decision, sent)
        if matrix_mod.REPORT in actions and not sent.get("report"):
            self.report_unfit(decision)
            sent["report"] = True
        elif matrix_mod.REPORT not in actions and sent.get("report"):
            self._send(payloads.started(host), None, decision, "recovery")
            sent["report"] = False
        if matrix_mod.NOTIFY in actions and not sent.get("notify"):
            if operator:
                self._send(payloads.operator_notice(host), [operator], decision,
                           "notify_operator")
                sent["notify"] = True
            else:
                log.event(LOG, logging.WARNING, "notify_operator: %s (no [hostmonitor] "
                          "operator_driver configured: logged only)", decision["row"],
                          fields={"ACTION": "notify_operator"})
        elif matrix_mod.NOTIFY not in actions and sent.get("notify"):
            self._send(payloads.started(host), [operator] if operator else None, decision,
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
        nid = self._send(payloads.unfit(self.conf.hostname), None,
                         {**decision, "fencing": plan}, "report_host_failure")
        if how == fencing.NONE:
            log.event(LOG, logging.CRITICAL, "report_host_failure: this host is unfit (%s) "
                      "and no fencing is configured ([hostmonitor] fencing = none): "
                      "notification %s says host_status UNKNOWN, so Masakari evacuates "
                      "nothing; operator action needed", decision["row"], nid,
                      fields={"ACTION": "report_host_failure", "NOTIFICATION_ID": nid,
                              "FENCING": "none"})
            return
        self._spawn(self._fence, "hm-fence", self.conf, nid)

    def _fence(self, conf, nid: int | None) -> None:
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
        if nid is None:
            LOG.warning("the fencing request is not recorded in the notification's history: "
                        "the outbox has not taken the notification yet")
        else:
            try:
                self.emit.note(nid, "fencing", result.as_dict())
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
        """The degraded-host row's drain, through ``drain_driver`` only: payloads.drain
        ("stop scheduling onto this host"), payloads.drain_release when the row clears."""
        drain = self.conf.hostmonitor.drain_driver
        if matrix_mod.DRAIN in actions and not sent.get("drain"):
            if not drain:
                log.event(LOG, logging.WARNING, "drain: host degraded %s (no [hostmonitor] "
                          "drain_driver configured: logged only)", decision.get("host_health"),
                          fields={"ACTION": "drain"})
                return
            self._send(payloads.drain(self.conf.hostname), [drain], decision, "drain")
            sent["drain"] = True
        elif matrix_mod.DRAIN not in actions and sent.get("drain"):
            if drain:
                self._send(payloads.drain_release(self.conf.hostname), [drain], decision,
                           "drain recovery")
            sent["drain"] = False

    def _send(self, notification, drivers, decision, what) -> int | None:
        with self._save_lock:
            self._unstored += 1
        result = self.emit(notification, decision={**decision, "action": what},
                           drivers=drivers, on_stored=self._stored)
        shown = result.id if result.id is not None else "(held in memory: outbox not writable)"
        if decision["row"].get("management") == DOWN:
            # Not "held": the API may be reachable another way, and the delivery worker
            # sends as soon as it answers. Say what is true: durable, sent when possible.
            self.queued_while_unreachable += 1
            log.event(LOG, logging.WARNING, "%s: management network down: notification %s "
                      "is queued in the outbox and delivered as soon as the API answers "
                      "(%d pending)", what, shown, self.queued_while_unreachable,
                      fields={**notification.subject(), "NOTIFICATION_ID": result.id,
                              "ACTION": what})
        else:
            log.event(LOG, logging.WARNING, "%s for %s: notification %s (row %s)", what,
                      self.conf.hostname, shown, decision["row"],
                      fields={**notification.subject(), "NOTIFICATION_ID": result.id,
                              "ACTION": what, "RULE": decision.get("rule")})
        return result.id

    def _stored(self, _result) -> None:
        with self._save_lock:
            self._unstored -= 1
            late = self._unstored == 0 and self._save_deferred
        if late:
            self._save_state()

    # -- durable state ----------------------------------------------------------------------
    def _load_state(self) -> dict:
        try:
            doc = statefile.read(self.state_file) or {}
            return {"applied": list(doc.get("applied", [])), "sent": dict(doc.get("sent", {}))}
        except (statefile.StateFileError, TypeError, ValueError) as exc:
            LOG.warning("%s: starting with no action applied", exc)
            return {"applied": [], "sent": {}}

    def _save_state(self) -> None:
        with self._save_lock:
            self._save_deferred = self._unstored > 0
            if self._save_deferred:
                LOG.warning("applied actions not saved until the outbox has taken the "
                            "notification (a restart meanwhile sends it again)")
                return
        try:
            statefile.write(self.state_file, {**self.state, "row": self.row,
                                              "updated_at": time.time()})
        except OSError as exc:
            LOG.warning("cannot write %s: %s", self.state_file, exc)
