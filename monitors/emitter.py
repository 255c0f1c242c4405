"""The one door from a source into the outbox.

Validate, plan the actions (recorded with the row), store durably, log with journal fields,
count. When the outbox cannot take a detection (disk full, read-only, I/O error) it waits
in the daemon's Backlog (returned as ``Held``) and ``on_stored`` runs once it is durable.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Callable

from monitors import actions, log, metrics
from monitors.backlog import Backlog, Held
from monitors.notification import Notification
from monitors.outbox import Outbox

LOG = logging.getLogger(__name__)


class Emitter:
    """The one door from a source into the outbox: validate, record durably, log. When the
    outbox cannot take it (disk full, read-only, I/O error) the detection waits in the
    daemon's Backlog (returned as ``Held``) and ``on_stored(result)`` runs once it is durable
    (``result.id`` is the row)."""

    def __init__(self, conf, outbox: Outbox, source: str, backlog: Backlog | None = None):
        self.conf = conf
        self.outbox = outbox
        self.source = source
        self.backlog = backlog if backlog is not None else Backlog()
        self.last_event: float | None = None

    def __call__(self, notification: Notification, decision: dict | None = None,
                 drivers: list[str] | None = None, on_stored: Callable | None = None):
        # The routing decision (which actions this detection asks for) is made here, where
        # the row is created, and recorded with it; drivers only execute.
        plan = actions.plan(self.outbox, self.conf, notification, decision, drivers)
        notification = plan.notification  # as the recipient must get it (recipient.distinct)
        result = self.backlog.put(self.outbox, notification, source=self.source,
                                  drivers=plan.drivers, decision=plan.decision,
                                  on_stored=on_stored, first=plan.first,
                                  not_before=plan.not_before)
        self.last_event = time.time()
        fields = {**notification.subject(), "SOURCE": self.source}
        if result is None or isinstance(result, Held):
            metrics.event_detected(self.source, notification.type,
                                   "held" if result else "refused")
            log.event(LOG, logging.ERROR, "detected %s %s on %s: the outbox cannot take it "
                      "(%s); %s", notification.type,
                      json.dumps(notification.payload, sort_keys=True), notification.hostname,
                      self.backlog.error, "held in memory and retried" if result else
                      "memory backlog full, NOT kept", fields={**fields,
                                                                 "DELIVERY_STATE": "held"})
            return result if result is not None else Held(queued=False, held=False)
        metrics.event_detected(self.source, notification.type, result.queued)
        fields.update({"NOTIFICATION_ID": result.id, "DELIVERY_STATE": "pending"})
        distinct = (plan.decision or {}).get("distinct") or {}
        if result.queued:
            log.event(LOG, logging.WARNING, "detected %s %s on %s: queued as notification %s%s",
                      notification.type, json.dumps(notification.payload, sort_keys=True),
                      notification.hostname, result.id,
                      f"; {distinct['why']}" if distinct.get("why") else "", fields=fields)
        else:
            log.event(LOG, logging.INFO, "detected %s %s again: notification %s still "
                      "pending, not queued twice", notification.type,
                      json.dumps(notification.payload, sort_keys=True), result.id,
                      fields=fields)
        return result

    def note(self, notification_id: int, kind: str, detail: dict) -> None:
        """Add what a source did about a stored notification (e.g. the fencing request it
        made) to that notification's history."""
        self.outbox.note(notification_id, kind, detail)
