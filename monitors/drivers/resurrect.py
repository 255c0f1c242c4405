"""The resurrect action: put a host Masakari recovered back in service, without a person.

Routed (monitors.actions) to a COMPUTE_HOST STARTED that follows a fenced STOPPED, or a
PROCESS STARTED that follows a PROCESS STOPPED, when ``[nova] resurrect`` is on. The driver
only executes, in an order that makes a retry after any partial step safe:

1. Masakari: find the host in its segments; while a notification of that host is still
   new, running or in error, Masakari is recovering it: retry later (the API would refuse
   the host update with 409 anyway).
2. Nova: read the nova-compute service. Disabled with a ``disabled_reason`` that is not one
   of ``[nova] resurrect_disable_reasons``: a person disabled it. Then only ``forced_down``
   (ours) is cleared for a host; the service stays disabled and the Masakari host stays on
   maintenance — the operator's decision is never undone.
   A forced-down host whose evacuations Nova still lists as ``done`` (its nova-compute
   has not restarted and cleaned them up to ``completed`` yet): retry later, nothing
   changed — Nova refuses ``forced_down = false`` until then (400 since Wallaby).
3. Masakari: ``on_maintenance = false`` (PUT /v1/segments/{segment}/hosts/{host}), only
   when the service is disabled by Masakari: its engine disables the service before it sets
   maintenance, so a maintenance beside an enabled service is a person's, and stays.
4. Nova: ``forced_down = false`` (host only; we or the fencing set it), then
   ``status = enabled`` when the disable was Masakari's.

Each step is written to the journal as it is done, and the answer's message (kept in the
outbox history) lists them all.
"""
from __future__ import annotations

import logging

from monitors import actions, log
from monitors.drivers import Answer, Driver, classify
from monitors.drivers.masakari import MasakariDriver
from monitors.drivers.nova import NovaError, NovaServices
from monitors.notification import COMPUTE_HOST, Notification
from monitors.states import Outcome

LOG = logging.getLogger(__name__)

RECOVERING = ("new", "running", "error")


class ResurrectDriver(Driver):
    name = actions.RESURRECT

    def __init__(self, conf):
        super().__init__(conf)
        self.nova = NovaServices(conf)
        self.masakari = MasakariDriver(conf)

    # -- Masakari ---------------------------------------------------------------------------
    def _masakari_host(self, name: str):
        ha = self.masakari._connection().instance_ha
        for segment in ha.segments():
            for host in ha.hosts(segment.uuid):
                if host.name == name:
                    return segment, host
        return None, None

    def _recovering(self, host) -> list[str]:
        ha = self.masakari._connection().instance_ha
        return [f"{n.notification_uuid} ({n.type}, {n.status})"
                for n in ha.notifications(source_host_uuid=host.uuid)
                if n.status in RECOVERING]

    # -- the action -------------------------------------------------------------------------
    def send(self, notification: Notification) -> Answer:
        from keystoneauth1 import exceptions as ks_exc
        from openstack import exceptions as sdk_exc

        if notification.payload.get("event") != "STARTED":
            return Answer(Outcome.REJECTED, None, None,
                          "refused: resurrect only follows a STARTED")
        name = notification.hostname
        is_host = notification.type == COMPUTE_HOST
        steps: list[str] = []
        try:
            segment, host = self._masakari_host(name)
            if host is not None:
                busy = self._recovering(host)
                if busy:
                    return Answer(Outcome.RETRY, 409, None,
                                  f"Masakari is still recovering {name}: "
                                  + ", ".join(busy) + "; nothing changed yet")
            service = self.nova.compute_service(name)
            if is_host and service.get("forced_down"):
                pending = self.nova.done_evacuations(name)
                if pending:
                    return Answer(Outcome.RETRY, 400, None,
                                  f"nova-compute on {name} has not restarted yet: Nova "
                                  f"still lists {len(pending)} evacuation(s) from it as "
                                  "`done` and refuses forced_down=false until it has; "
                                  "nothing changed yet")
            reason = service.get("disabled_reason") or ""
            by_masakari = (service.get("status") == "disabled"
                           and reason in self.conf.nova.resurrect_disable_reasons)
            by_operator = service.get("status") == "disabled" and not by_masakari
            if host is None:
                steps.append(f"{name} is not a Masakari host: maintenance left alone")
            elif by_operator:
                steps.append(f"Masakari host {name} left on maintenance "
                             f"(on_maintenance={host.on_maintenance}): nova-compute was "
                             f"disabled by a person ({reason!r})")
            elif host.on_maintenance and by_masakari:
                self.masakari._connection().instance_ha.update_host(
                    host.uuid, segment.uuid, on_maintenance=False)
                self._step(steps, notification, "maintenance-off",
                           f"Masakari host {name} taken off maintenance "
                           f"(segment {segment.name})")
            elif host.on_maintenance:
                # Masakari's engine disables the service before it sets maintenance: with
                # the service enabled, the maintenance is not one of its recoveries.
                steps.append(f"Masakari host {name} left on maintenance: nova-compute is "
                             "not disabled by Masakari, so the maintenance is not a "
                             "recovery's (a person's?)")
            if is_host and service.get("forced_down"):
                self.nova.update(service["id"], {"forced_down": False})
                self._step(steps, notification, "unforce",
                           f"nova-compute on {name}: forced_down cleared")
            if by_masakari:
                self.nova.update(service["id"], {"status": "enabled"})
                self._step(steps, notification, "enable",
                           f"nova-compute on {name} enabled again (was disabled by "
                           f"Masakari: {reason!r})")
            elif by_operator:
                log.event(LOG, logging.WARNING, "nova-compute on %s stays disabled: disabled "
                          "by a person (%r), not by Masakari; enable it yourself when ready",
                          name, reason, fields=self._fields(notification, "keep-disabled"))
                steps.append(f"nova-compute on {name} left disabled: operator's reason "
                             f"{reason!r}")
            elif service.get("status") != "disabled":
                steps.append(f"nova-compute on {name} already enabled")
        except NovaError as exc:
            return self._partial(exc.answer, steps)
        except sdk_exc.HttpException as exc:
            status = exc.status_code or 0
            outcome = classify(status) if status else Outcome.RETRY
            if outcome == Outcome.DUPLICATE:  # 409 HostInUse: Masakari is recovering it
                outcome = Outcome.RETRY
            if outcome == Outcome.AUTH:
                self.masakari.close()
            return self._partial(Answer(outcome, status or None, None,
                                        f"Masakari: {_sdk_message(exc)}"), steps)
        except (ks_exc.ClientException, OSError) as exc:
            return self._partial(Answer(Outcome.RETRY, None, None,
                                        f"{type(exc).__name__}: {exc}"), steps)
        return Answer(Outcome.DELIVERED, 200, service.get("id"),
                      "; ".join(steps) or "nothing to do")

    @staticmethod
    def _partial(answer: Answer, steps: list[str]) -> Answer:
        if not steps:
            return answer
        return Answer(answer.outcome, answer.status, answer.remote_id,
                      f"{answer.message} (done before: {'; '.join(steps)})")

    def _step(self, steps, notification, action, text) -> None:
        steps.append(text)
        log.event(LOG, logging.WARNING, "resurrect: %s", text,
                  fields=self._fields(notification, action))

    @staticmethod
    def _fields(notification, action) -> dict:
        return {**notification.subject(), "ACTION": f"resurrect:{action}"}

    def close(self) -> None:
        self.nova.close()
        self.masakari.close()


def _sdk_message(exc) -> str:
    """An openstacksdk HttpException as "<status>: <Masakari's message>" (this driver's
    queries go through openstacksdk; the notification POST does not)."""
    details = getattr(exc, "details", None) or ""
    return f"{exc.status_code}: {details or exc.message}".strip()
