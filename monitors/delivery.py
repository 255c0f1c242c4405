"""The delivery worker: claim the most urgent due row, send it through its driver, record
the answer. The only retry loop of the project: sources and drivers never retry.

The policy lives here, the outbox only stores it: when to ask again (backoff), when a row
has waited too long ([delivery] max_age: expired), and the per-driver gate that keeps an
unreachable recipient from being hammered with the whole backlog. While a backlog drains,
each answer is recorded together with the next claim (one transaction per delivery).
The worker also starts the follow-up of what it delivered (monitors/follow.py)."""
from __future__ import annotations

import logging
import random
import threading
import time

from monitors import config, log, metrics, recipient
from monitors.drivers import Answer, Driver
from monitors.outbox import Claim, Outbox
from monitors.states import Outcome, State

LOG = logging.getLogger(__name__)


def backoff(attempt: int, initial: float, cap: float, rng=random.random) -> float:
    """Capped exponential backoff with jitter in [delay/2, delay]."""
    delay = min(cap, initial * (2 ** max(attempt - 1, 0)))
    return delay / 2 + rng() * delay / 2


def unreachable(answer: Answer) -> bool:
    """No HTTP status and not accepted: the recipient could not be reached at all."""
    return answer.status is None and not Outcome(answer.outcome).accepted


def expired(claim: Claim, max_age: float) -> bool:
    """[delivery] max_age: a row still undelivered this long after detection expires."""
    return bool(max_age) and claim.age() >= max_age


class DeliveryWorker:
    def __init__(self, conf, outbox: Outbox, drivers: dict[str, Driver], threads: int = 1):
        self.conf = conf
        self.outbox = outbox
        self.drivers = drivers
        self.threads = max(1, threads)
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self.last_answer: Answer | None = None
        # Per-driver gate: a recipient that could not be reached is not hammered with the
        # whole backlog; it is probed (with the most urgent row) when the gate opens.
        self._gate_lock = threading.Lock()
        self._closed_until: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._retention_lock = threading.Lock()
        self._retention_due = 0.0  # monotonic: at the first loop, then hourly
        # After a 202: what the engine does with it (monitors/follow.py), one thread.
        from monitors.follow import Follower

        self.follower = Follower(conf, outbox, drivers)

    # -- one delivery -----------------------------------------------------------------------
    def deliver(self, claim: Claim) -> str:
        """Send one claimed row and record the answer; returns the row's new state."""
        return self._deliver(claim, chain=False)[0]

    def _deliver(self, claim: Claim, chain: bool) -> tuple[str, Claim | None]:
        """Send, decide, record; with chain, the next claim is taken in the same
        transaction as the record (None: nothing due)."""
        driver = self.drivers[claim.driver]
        try:
            answer = driver.send(claim.notification)
        except Exception as exc:  # noqa: BLE001 - a driver bug must not lose the row
            LOG.exception("driver %s failed on notification %s", claim.driver,
                          claim.notification_id)
            answer = Answer(Outcome.RETRY, None, None,
                            f"driver error: {type(exc).__name__}: {exc}")
        if answer.outcome not in Outcome.__members__.values():
            # a driver's bug, not the recipient's answer: kept and retried, like an exception
            answer = Answer(Outcome.RETRY, answer.status, answer.remote_id,
                            f"driver error: unknown outcome {answer.outcome!r}")
        self.last_answer = answer
        outcome = Outcome(answer.outcome)
        gate_delay = self._update_gate(claim.driver, answer)
        state, retry_in = self.decide(claim, answer, gate_delay)
        record = dict(state=state, status=answer.status, remote_id=answer.remote_id,
                      message=answer.message, retry_in=retry_in)
        if gate_delay is not None and state == State.PENDING:
            # Unreachable: the gate alone decides when this driver is tried again. The row
            # is due at once, held back only by the closed gate, so when it reopens the
            # backlog drains in priority order (a host fault never waits behind a VM fault
            # for a retry time of its own); retry_in says when the gate reopens.
            record["next_attempt_at"] = time.time()
        stored = Outcome.RETRY if outcome == Outcome.AUTH else outcome
        following = None
        if chain and not self._stop.is_set():
            state, following = self.outbox.finish_and_claim(
                claim, stored, **record, drivers=self.open_drivers(),
                lease=self.conf.delivery.lease_seconds,
                stage_hold=self.conf.nova.force_down_hold, withdraw=recipient.withdrawal)
        else:
            state = self.outbox.finish(claim, stored, **record)
        self._report(claim, answer, outcome, state, retry_in)
        return state, following

    def decide(self, claim: Claim, answer: Answer, gate_delay: float | None = None
               ) -> tuple[State, float]:
        """What becomes of a delivery after this answer: (state, retry in seconds)."""
        outcome = Outcome(answer.outcome)
        d = self.conf.delivery
        if outcome.accepted:
            return State.DELIVERED, 0.0
        if outcome == Outcome.REJECTED:
            return State.REJECTED, 0.0
        if expired(claim, d.max_age):
            return State.EXPIRED, 0.0
        if outcome == Outcome.HELD:
            # The recipient will take it once an operator ends the host's maintenance:
            # keep asking, but rarely (capped by [delivery] held_retry_interval).
            return State.PENDING, backoff(claim.attempt, d.retry_initial_interval,
                                          d.held_retry_interval)
        if gate_delay is not None:
            # Unreachable: the gate decides when this driver is tried again (the most
            # urgent row probes, then the backlog drains in order).
            return State.PENDING, gate_delay
        return State.PENDING, backoff(claim.attempt, d.retry_initial_interval,
                                      config.retry_max_interval(self.conf))

    def _report(self, claim: Claim, answer: Answer, outcome: Outcome, state: str,
                retry_in: float) -> None:
        metrics.delivery_answered(claim.driver, outcome, answer.status, claim.created_at)
        fields = {**claim.notification.subject(), "NOTIFICATION_ID": claim.notification_id,
                  "DELIVERY_STATE": state, "DRIVER": claim.driver}
        if outcome.accepted and answer.remote_id:
            self.follower.wake()  # its first look is due soon
        if outcome.accepted:
            log.event(LOG, logging.INFO, "notification %s delivered via %s (%s, %s)",
                      claim.notification_id, claim.driver, outcome,
                      answer.remote_id or answer.status, fields=fields)
        elif outcome == Outcome.REJECTED:
            log.event(LOG, logging.ERROR, "notification %s REJECTED by %s: %s; kept in the "
                      "outbox, not retried (ha-monitors outbox retry %s)",
                      claim.notification_id, claim.driver, answer.message,
                      claim.notification_id, fields=fields)
        elif outcome == Outcome.HELD and state != State.EXPIRED:
            log.event(LOG, logging.WARNING, "notification %s HELD by %s: %s; kept pending, "
                      "asked again in %.1fs (delivered once the host leaves maintenance)",
                      claim.notification_id, claim.driver, answer.message, retry_in,
                      fields=fields)
        elif outcome == Outcome.AUTH:
            log.event(LOG, logging.ERROR, "notification %s: %s refused our credentials (%s): "
                      "re-authenticating, retry in %.1fs; check the [api] options",
                      claim.notification_id, claim.driver, answer.message, retry_in,
                      fields=fields)
        elif state == State.EXPIRED:
            log.event(LOG, logging.ERROR, "notification %s expired after [delivery] max_age "
                      "without delivery via %s (last: %s)", claim.notification_id,
                      claim.driver, answer.message, fields=fields)
        else:
            log.event(LOG, logging.WARNING, "notification %s not delivered via %s (attempt "
                      "%d: %s); retry in %.1fs", claim.notification_id, claim.driver,
                      claim.attempt, answer.message, retry_in, fields=fields)

    def _update_gate(self, driver: str, answer: Answer) -> float | None:
        """Close the driver's gate after an unreachable answer (for a backoff growing with
        the consecutive failures), open it after any answer. Returns how long it stays
        closed (None: open)."""
        with self._gate_lock:
            if unreachable(answer):
                failures = self._failures.get(driver, 0) + 1
                self._failures[driver] = failures
                delay = backoff(failures, self.conf.delivery.retry_initial_interval,
                                config.retry_max_interval(self.conf))
                # monotonic: a wall-clock step neither stalls nor opens the gate
                self._closed_until[driver] = time.monotonic() + delay
                return delay
            self._failures.pop(driver, None)
            self._closed_until.pop(driver, None)
            return None

    def open_drivers(self) -> list[str]:
        now = time.monotonic()
        with self._gate_lock:
            return [d for d in self.drivers if self._closed_until.get(d, 0) <= now]

    def gate_reopens_at(self) -> float | None:
        """When the first closed gate reopens, as a wall-clock time (comparable with the
        outbox's next_due)."""
        with self._gate_lock:
            until = min(self._closed_until.values(), default=None)
        return None if until is None else time.time() + (until - time.monotonic())

    def claim(self, notification_id: int | None = None) -> Claim | None:
        # Before a claim, a row whose condition cleared meanwhile is withdrawn (the
        # recipient's rules judge it; the outbox stores the verdict).
        return self.outbox.claim(self.open_drivers(), self.conf.delivery.lease_seconds,
                                 notification_id, stage_hold=self.conf.nova.force_down_hold,
                                 withdraw=recipient.withdrawal)

    def run_once(self, notification_id: int | None = None) -> bool:
        claim = self.claim(notification_id)
        if claim is None:
            return False
        self.deliver(claim)
        return True

    def drain(self) -> bool:
        """Deliver until nothing is due (or stopping), each answer recorded with the next
        claim. Returns whether anything was delivered."""
        claim = self.claim()
        if claim is None:
            return False
        while claim is not None:
            _, claim = self._deliver(claim, chain=True)
        return True

    def deliver_now(self, notification_id: int, timeout: float) -> dict:
        """Deliver one notification in this process (``ha-monitors notify --wait``)."""
        from monitors.history import ReadModel

        read, deadline = ReadModel(self.outbox), time.monotonic() + timeout
        while True:
            row = read.get(notification_id)
            if row["state"] != "pending" or time.monotonic() >= deadline:
                return row
            if not self.run_once(notification_id):
                due = min(filter(None, (self.outbox.next_due(self.open_drivers()),
                                        self.gate_reopens_at())), default=time.time())
                time.sleep(max(0.01, min(due - time.time(), deadline - time.monotonic(), 1.0)))

    # -- housekeeping -------------------------------------------------------------------------
    RETENTION_EVERY = 3600.0

    def apply_retention(self) -> None:
        """Age out finished rows ([delivery] retention_days); at most hourly, one thread."""
        days = self.conf.delivery.retention_days
        if not days or not self._retention_lock.acquire(blocking=False):
            return
        try:
            if time.monotonic() < self._retention_due:
                return
            self._retention_due = time.monotonic() + self.RETENTION_EVERY
            removed = self.outbox.apply_retention(time.time() - days * 86400)
            if removed:
                LOG.info("outbox: %d delivered notification(s) older than %g days removed "
                         "with their history ([delivery] retention_days)", removed, days)
        finally:
            self._retention_lock.release()

    # -- the loop ---------------------------------------------------------------------------
    def _loop(self) -> None:
        poll = self.conf.delivery.idle_poll_interval
        last_error, logged_at = "", 0.0
        while not self._stop.is_set():
            try:
                self.apply_retention()
                if self.drain():
                    continue
                due = min(filter(None, (self.outbox.next_due(self.open_drivers()),
                                        self.gate_reopens_at())), default=None)
                wait = poll if due is None else min(poll, max(due - time.time(), 0.01))
                self.outbox.wait(wait)
            except Exception as exc:  # noqa: BLE001 - e.g. a locked or full disk: keep trying
                # The same error once a minute (with its traceback the first time), not
                # once a second: the runtime's status names an outbox fault anyway.
                text = f"{type(exc).__name__}: {exc}"
                if text != last_error:
                    LOG.exception("delivery loop error; retrying every second")
                elif time.monotonic() - logged_at >= 60.0:
                    LOG.error("delivery loop error (still): %s; retrying every second", text)
                else:
                    self._stop.wait(1.0)
                    continue
                last_error, logged_at = text, time.monotonic()
                self._stop.wait(1.0)

    def start(self) -> None:
        self._stop.clear()
        for i in range(self.threads):
            t = threading.Thread(target=self._loop, name=f"delivery-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        self.follower.start()

    def stop(self, timeout: float) -> None:
        """Let in-flight sends finish (bounded by the HTTP timeout); queued rows stay."""
        self._stop.set()
        self.follower._stop.set()
        self.outbox.wake()
        deadline = time.monotonic() + timeout
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        self.follower.stop(deadline - time.monotonic())
        self._workers = [t for t in self._workers if t.is_alive()]
        for driver in self.drivers.values():
            driver.close()
