"""Nova's os-services through keystoneauth, and the force-down action.

The force-down driver executes what the routing decision (monitors.actions) asked for: the
nova-compute service of a host whose fencing is confirmed is marked ``forced_down`` (compute
API 2.53, ``PUT /os-services/{id}``), so Nova allows evacuation at once instead of after
``service_down_time`` without heartbeats — what fence_compute does in Red Hat's Instance
HA. As a guard (not a decision), it refuses any notification other than COMPUTE_HOST STOPPED
with host_status NORMAL: forcing down a host that still runs would let Nova rebuild its VMs
elsewhere while they run.

Credentials: the keystoneauth options of ``[nova]``; when that group sets neither
``auth_type`` nor ``auth_section``, the ``[api]`` credentials and session. TLS is verified
unless ``insecure`` is set, like every keystoneauth session.
"""
from __future__ import annotations

import logging

from monitors import actions, log, recipient
from monitors.drivers import Answer, Driver, classify
from monitors.notification import Notification
from monitors.states import Outcome

LOG = logging.getLogger(__name__)

MICROVERSION = "2.53"  # service ids are UUIDs; PUT /os-services/{id} takes forced_down


class NovaError(Exception):
    """A Nova answer that ends this attempt, already classified."""

    def __init__(self, answer: Answer):
        super().__init__(answer.message)
        self.answer = answer


class NovaServices:
    """The few os-services calls the actions make, each with a timeout."""

    def __init__(self, conf):
        self.conf = conf
        self._adapter = None

    def _group(self) -> str:
        nova = self.conf.nova
        return "nova" if (nova.auth_type or nova.auth_section) else "api"

    def adapter(self):
        if self._adapter is None:
            from keystoneauth1 import loading as ks_loading

            group = self._group()
            auth = ks_loading.load_auth_from_conf_options(self.conf, group)
            session = ks_loading.load_session_from_conf_options(self.conf, group, auth=auth)
            session.timeout = (self.conf[group].timeout or self.conf.delivery.http_timeout)
            self._adapter = ks_loading.load_adapter_from_conf_options(
                self.conf, "nova", session=session, auth=auth)
            if not self.conf.nova.region_name and group == "api":
                self._adapter.region_name = self.conf.api.region
        return self._adapter

    def close(self) -> None:
        adapter, self._adapter = self._adapter, None
        if adapter is not None:
            try:
                adapter.session.session.close()
            except Exception:  # noqa: BLE001
                LOG.debug("closing the Nova session failed", exc_info=True)

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        from keystoneauth1 import exceptions as ks_exc

        try:
            resp = self.adapter().request(path, method, json=body, raise_exc=False,
                                          microversion=MICROVERSION)
        except ks_exc.Unauthorized as exc:
            self.close()
            raise NovaError(Answer(Outcome.AUTH, 401, None, f"Nova: {exc}")) from None
        except (ks_exc.ClientException, OSError) as exc:
            raise NovaError(Answer(Outcome.RETRY, None, None,
                                   f"Nova: {type(exc).__name__}: {exc}")) from None
        if not 200 <= resp.status_code < 300:
            outcome = classify(resp.status_code)
            if outcome == Outcome.AUTH:
                self.close()
            if outcome == Outcome.DUPLICATE:  # Nova's 409 is a conflict, never a duplicate
                outcome = Outcome.RETRY
            raise NovaError(Answer(outcome, resp.status_code, None,
                                   f"Nova {method} {path}: {resp.status_code}: "
                                   f"{resp.text[:300]}"))
        try:
            return resp.json() if resp.content else {}
        except ValueError:
            raise NovaError(Answer(Outcome.RETRY, resp.status_code, None,
                                   f"Nova {method} {path}: answer is not JSON")) from None

    def compute_service(self, host: str) -> dict:
        services = self._call("GET", f"/os-services?binary=nova-compute&host={host}")
        found = [s for s in services.get("services", []) if s.get("host") == host]
        if not found:
            raise NovaError(Answer(Outcome.REJECTED, 404, None,
                                   f"Nova has no nova-compute service on host {host!r}"))
        return found[0]

    def done_evacuations(self, host: str) -> list[dict]:
        """Evacuations from ``host`` Nova still lists as ``done``: they become ``completed``
        when its nova-compute starts again; until then Nova refuses to force it up."""
        found = self._call("GET", f"/os-migrations?source_compute={host}"
                                  "&migration_type=evacuation&status=done")
        return [m for m in found.get("migrations", []) if m.get("source_compute") == host]

    def update(self, service_id: str, body: dict) -> dict:
        return self._call("PUT", f"/os-services/{service_id}", body).get("service", {})


class NovaForceDownDriver(Driver):
    """Mark a fenced host's nova-compute forced_down (routing: monitors.actions)."""

    name = actions.FORCE_DOWN

    def __init__(self, conf):
        super().__init__(conf)
        self.nova = NovaServices(conf)

    def send(self, notification: Notification) -> Answer:
        if not recipient.fenced_host_failure(notification):
            return Answer(Outcome.REJECTED, None, None,
                          "refused: force-down only for COMPUTE_HOST STOPPED with "
                          "host_status NORMAL (fencing confirmed); this is "
                          f"{notification.type} {dict(notification.payload)}")
        host = notification.hostname
        try:
            service = self.nova.compute_service(host)
            if service.get("forced_down"):
                return Answer(Outcome.DELIVERED, 200, service.get("id"),
                              f"nova-compute on {host} already forced down")
            self.nova.update(service["id"], {"forced_down": True})
        except NovaError as exc:
            return exc.answer
        log.event(LOG, logging.WARNING, "nova-compute on %s forced down in Nova (fencing "
                  "confirmed): evacuation allowed at once", host,
                  fields={"PEER_HOST": host, "ACTION": "force-down",
                          "NOVA_SERVICE_ID": service["id"]})
        return Answer(Outcome.DELIVERED, 200, service["id"], f"nova-compute on {host} forced down")

    def close(self) -> None:
        self.nova.close()
