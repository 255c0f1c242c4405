"""The Masakari driver: openstacksdk ``instance_ha`` through a keystoneauth session built
from the ``[api]`` options, exactly as masakari-monitors configures it.

An HTTP error is Masakari's own answer only when its body is Masakari's fault document
(``{"badRequest": {"code": 400, "message": ...}}``: one key, whose ``code`` is the status).
Anything else (an HTML 404 or 413 of a proxy, a load balancer's 502 during an upgrade) is
retried and worded as what it is, so a host failure is never parked as "rejected by
masakari" because something in between answered. Masakari's 409 means three things
(masakari 22.0.0): "... is duplicate" (we already delivered it), "... is ignored as the
host is already under maintenance" and other conflicts; only the first counts as delivered,
the others are held (kept pending, retried until Masakari takes them)."""
from __future__ import annotations

import logging

from monitors.drivers import Answer, Driver, classify
from monitors.notification import Notification
from monitors.secrets import mask_text, mask_url
from monitors.states import Outcome

LOG = logging.getLogger(__name__)


class MasakariDriver(Driver):
    name = "masakari"

    def __init__(self, conf):
        super().__init__(conf)
        self._conn = None

    def _connection(self):
        if self._conn is None:
            import openstack.connection
            from keystoneauth1 import loading as ks_loading

            api = self.conf.api
            auth = ks_loading.load_auth_from_conf_options(self.conf, "api")
            session = ks_loading.load_session_from_conf_options(self.conf, "api", auth=auth)
            # keystoneauth has no timeout by default: an unanswered POST must never hang.
            session.timeout = api.timeout or self.conf.delivery.http_timeout
            self._conn = openstack.connection.Connection(
                session=session, region_name=api.region, interface=api.api_interface,
                instance_ha_api_version=api.api_version.lstrip("v") or "1")
        return self._conn

    def send(self, notification: Notification) -> Answer:
        from keystoneauth1 import exceptions as ks_exc
        from openstack import exceptions as sdk_exc

        try:
            conn = self._connection()
            result = conn.instance_ha.create_notification(**notification.to_dict())
        except sdk_exc.HttpException as exc:
            answer = self.classify_error(exc.status_code or 0, getattr(exc, "response", None),
                                         exc)
            if answer.outcome == Outcome.AUTH:
                self.close()  # authenticate again on the next attempt
            return answer
        except ks_exc.Unauthorized as exc:
            self.close()
            return Answer(Outcome.AUTH, 401, None, mask_text(str(exc)))
        except (ks_exc.ClientException, OSError) as exc:
            return Answer(Outcome.RETRY, None, None, mask_text(f"{type(exc).__name__}: {exc}"))
        uuid = getattr(result, "notification_uuid", None)
        if not uuid:
            # openstacksdk turns a 300 from the version page into an empty object.
            return Answer(Outcome.RETRY, None, None, "answer without notification_uuid: does the "
                          "[api] endpoint end with /v1?")
        return Answer(Outcome.DELIVERED, 202, uuid, "accepted")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing must never fail a shutdown
                LOG.debug("closing the openstacksdk connection failed", exc_info=True)


    def classify_error(self, status: int, response, exc=None) -> Answer:
        """An HTTP error answer → outcome, from the status and who answered it."""
        if not status:
            return Answer(Outcome.RETRY, None, None, mask_text(f"{type(exc).__name__}: {exc}"))
        if status in (401, 403):
            return Answer(Outcome.AUTH, status, None, mask_text(_api_message(exc, response)))
        fault = masakari_fault(status, response)
        if fault is None:
            where = mask_url(getattr(response, "url", None) or self.conf.api.endpoint or "?")
            return Answer(Outcome.RETRY, status, None,
                          f"HTTP {status} from {where} (not a Masakari answer): retrying")
        if status == 409:
            if "is duplicate" in fault:
                return Answer(Outcome.DUPLICATE, status, None, f"409: {fault}")
            if "maintenance" in fault:
                return Answer(Outcome.HELD, status, None,
                              f"held: host on maintenance in Masakari (409: {fault})")
            return Answer(Outcome.HELD, status, None, f"held: conflict in Masakari (409: {fault})")
        outcome = classify(status)
        if outcome == Outcome.REJECTED:
            return Answer(Outcome.REJECTED, status, None, f"{status}: {fault}")
        return Answer(outcome, status, None, f"{status}: {fault}")


def masakari_fault(status: int, response) -> str | None:
    """The message of Masakari's fault document (``{"<fault>": {"code": status, "message":
    ...}}``), or None when the body is not one: then someone else answered."""
    if response is None:
        return None
    try:
        body = response.json()
    except Exception:  # noqa: BLE001 - HTML, text, empty: not Masakari's document
        return None
    if not isinstance(body, dict) or len(body) != 1:
        return None
    fault = next(iter(body.values()))
    if (not isinstance(fault, dict) or fault.get("code") != status
            or not isinstance(fault.get("message"), str)):
        return None
    return fault["message"]


def _api_message(exc, response) -> str:
    if exc is None:
        return str(getattr(response, "status_code", "?"))
    details = getattr(exc, "details", None) or ""
    return f"{exc.status_code}: {details or exc.message}".strip()
