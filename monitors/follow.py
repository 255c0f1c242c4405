"""Follow the recovery, not only the delivery.

After the recipient accepted a notification (Masakari 202 with its notification_uuid), ask
what its engine did with it: new → running → finished / failed / ignored (error while the
engine retries), and record what was seen in the outbox, where ``ha-monitors history``,
``status`` and the metrics read it. masakari-monitors stops at the 202.

The policy is here; the outbox stores, the driver's ``recovery_status(remote_id)`` makes
the HTTP call. Low rate and bounded ([delivery] follow_*): the first look
``follow_first_interval`` after the answer, then a doubling interval (with jitter, as the
delivery backoff) capped at ``follow_max_interval``, until a final status or
``follow_max_age`` after the answer (the last look is at most half an interval before
it); then it is given up, and says so.

Every daemon's delivery worker runs one follower thread. A follow-up is claimed with a
lease, like a delivery, so several daemons sharing one outbox never poll one notification
together, and one left by a process that died is taken over at once (its pid is gone).
What to follow is derived from the outbox (delivered deliveries with a remote id, and their
follow-up rows): nothing is kept only in memory, a restart picks up where it stopped."""
from __future__ import annotations

import logging
import random
import threading
import time

from monitors import log
from monitors.delivery import backoff
from monitors.outbox import FollowUp, Outbox

LOG = logging.getLogger(__name__)

#: The engine is done with the notification.
FINAL = frozenset({"finished", "failed", "ignored"})
#: The recovery did not happen: an operator must look (status CRITICAL until acknowledged).
FAILED = frozenset({"failed", "error"})
#: How often a follower looks for follow-ups other processes' workers made due.
SAFETY_POLL = 5.0


def followers(drivers: dict) -> dict:
    """The drivers that can tell what became of a delivered notification."""
    return {name: d for name, d in drivers.items()
            if callable(getattr(d, "recovery_status", None))}


def needs_attention(status: str | None, ended: str | None) -> str | None:
    """What an operator is told about a followed recovery: 'critical' (it ended failed,
    or still error when following gave up), 'warning' (error while the engine retries,
    or no final status within follow_max_age), None (fine, or still under way)."""
    if ended is not None and status in FAILED:
        return "critical"
    if status == "error" or ended == "bound":
        return "warning"
    return None


class Follower:
    """One thread: claim the most overdue follow-up, ask its driver, record the answer."""

    def __init__(self, conf, outbox: Outbox, drivers: dict, rng=random.random):
        self.conf = conf
        self.outbox = outbox
        self.drivers = followers(drivers)
        self.rng = rng
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.conf.delivery.follow_recovery and self.drivers)

    def _window(self) -> tuple[float, float]:
        """(answered since, first look after): the follow-up's bound and first delay."""
        d = self.conf.delivery
        return time.time() - d.follow_max_age, d.follow_first_interval

    def next_due(self) -> float | None:
        since, first = self._window()
        return self.outbox.next_follow_up(list(self.drivers), since, first)

    def run_once(self) -> bool:
        """Poll one due follow-up; False when none is due."""
        due = self.next_due()
        if due is None or due > time.time():
            return False  # a read only: no write transaction while nothing is due
        since, first = self._window()
        claim = self.outbox.claim_follow_up(list(self.drivers), since, first,
                                            self.conf.delivery.lease_seconds)
        if claim is None:
            return False
        self.poll(claim)
        return True

    def poll(self, claim: FollowUp) -> str | None:
        """Ask, decide, record; returns the status seen (None: unreadable)."""
        d = self.conf.delivery
        try:
            status, text = self.drivers[claim.driver].recovery_status(claim.remote_id)
        except Exception as exc:  # noqa: BLE001 - a driver bug must not stop following
            LOG.exception("driver %s failed reading the recovery of notification %s",
                          claim.driver, claim.notification_id)
            status, text = None, f"driver error: {type(exc).__name__}: {exc}"
        now, polls = time.time(), claim.polls + 1
        deadline = claim.delivered_at + d.follow_max_age
        # The next look: the backoff's interval, never less than half of it (its jitter),
        # and never after the bound; when no such look fits before the bound, give up now.
        interval = min(d.follow_max_interval, d.follow_first_interval * 2 ** polls)
        ended = ("final" if status in FINAL
                 else "bound" if deadline - now < interval / 2 else None)
        next_at = min(now + backoff(polls + 1, d.follow_first_interval,
                                    d.follow_max_interval, self.rng), deadline)
        error = None if status is not None else text
        changed = status is not None and status != claim.status
        detail = None
        if changed or ended or (error and error != claim.last_error):
            detail = {"driver": claim.driver, "remote_id": claim.remote_id,
                      "status": status if status is not None else claim.status,
                      "polls": polls, "after": round(now - claim.delivered_at, 3),
                      "by": self.outbox.owner}
            if error:
                detail["error"] = error[:500]
            elif text:
                detail["detail"] = text[:200]
            if ended:
                detail["ended"] = ended
                if ended == "bound":
                    detail["bound"] = d.follow_max_age
        self.outbox.record_follow_up(claim, status=status, error=error, next_at=next_at,
                                     ended=ended, detail=detail)
        if detail is not None:
            self._report(claim, detail)
        return status

    def _report(self, claim: FollowUp, detail: dict) -> None:
        status, ended = detail["status"], detail.get("ended")
        fields = {"NOTIFICATION_ID": claim.notification_id, "DRIVER": claim.driver,
                  "RECOVERY_STATUS": status or "unknown"}
        attention = needs_attention(status, ended)
        if ended == "bound":
            log.event(LOG, logging.ERROR if attention == "critical" else logging.WARNING,
                      "notification %s: no final recovery status from %s within "
                      "[delivery] follow_max_age (%gs, %d polls; last %s%s): no longer "
                      "followed; is masakari-engine running? (ha-monitors outbox ack %s)",
                      claim.notification_id, claim.driver, detail["bound"], detail["polls"],
                      status or "unknown",
                      f", {detail['error']}" if detail.get("error") else "",
                      claim.notification_id, fields=fields)
        elif detail.get("error"):
            LOG.warning("notification %s: recovery status at %s unreadable (poll %d): %s; "
                        "asked again later", claim.notification_id, claim.driver,
                        detail["polls"], detail["error"])
        elif attention == "critical":
            log.event(LOG, logging.ERROR, "notification %s: recovery %s at %s (%s, "
                      "%.1fs after delivery): the engine did not recover it; see "
                      "masakari-engine's log, then ha-monitors outbox ack %s",
                      claim.notification_id, status.upper(), claim.driver, claim.remote_id,
                      detail["after"], claim.notification_id, fields=fields)
        else:
            log.event(LOG, logging.WARNING if attention else logging.INFO,
                      "notification %s: recovery %s at %s (%s, %.1fs after delivery)",
                      claim.notification_id, status, claim.driver, claim.remote_id,
                      detail["after"], fields=fields)

    # -- the loop ---------------------------------------------------------------------------
    def wake(self) -> None:
        """This process's worker delivered something: look at the schedule again."""
        self._wake.set()

    def _loop(self) -> None:
        last_error, logged_at = "", 0.0
        while not self._stop.is_set():
            try:
                if self.run_once():
                    continue
                due = self.next_due()
                wait = SAFETY_POLL if due is None else min(SAFETY_POLL,
                                                           max(due - time.time(), 0.01))
                self._wake.wait(wait)
                self._wake.clear()
            except Exception as exc:  # noqa: BLE001 - e.g. a locked disk: keep following
                text = f"{type(exc).__name__}: {exc}"
                if text != last_error or time.monotonic() - logged_at >= 60.0:
                    LOG.error("recovery follow-up error: %s; retrying in %gs", text,
                              SAFETY_POLL, exc_info=text != last_error)
                    last_error, logged_at = text, time.monotonic()
                self._stop.wait(SAFETY_POLL)

    def start(self) -> None:
        if not self.enabled:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="recovery-follow",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Let an in-flight poll finish (bounded by the HTTP timeout); nothing is lost: an
        unfinished follow-up is in the outbox and taken up again."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(timeout, 0.0))
            if not self._thread.is_alive():
                self._thread = None


def acknowledge(box: Outbox, notification_id: int, note: str = "") -> int:
    """Operator action (``ha-monitors outbox ack``): a recovery that needs attention
    (ended failed/error, error, or given up) was seen; it stays in the history but no
    longer makes ``status`` report it. Returns 1 if there was one, else 0."""
    from monitors.history import ReadModel

    rows = [r for r in ReadModel(box).recoveries([notification_id]).values()
            if needs_attention(r["status"], r["ended"])]
    if not rows:
        return 0
    box.note(notification_id, "acknowledged", {
        "state": "delivered", "recovery": rows[0]["status"] or "unknown",
        "ended": rows[0]["ended"], "note": note, "by": box.owner})
    return 1
