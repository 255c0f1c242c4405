"""The Masakari driver: openstacksdk ``instance_ha`` through a keystoneauth session built
from the ``[api]`` options, exactly as masakari-monitors configures it."""
from __future__ import annotations

import logging

from monitors.drivers import AUTH, RETRY, Answer, Driver, classify
from monitors.notification import Notification

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
            status = exc.status_code or 0
            outcome = classify(status) if status else RETRY
            if outcome == AUTH:
                self.close()  # authenticate again on the next attempt
            return Answer(outcome, status, None, _api_message(exc))
        except ks_exc.Unauthorized as exc:
            self.close()
            return Answer(AUTH, 401, None, str(exc))
        except (ks_exc.ClientException, OSError) as exc:
            return Answer(RETRY, None, None, f"{type(exc).__name__}: {exc}")
        uuid = getattr(result, "notification_uuid", None)
        if not uuid:
            # openstacksdk turns a 300 from the version page into an empty object.
            return Answer(RETRY, None, None, "answer without notification_uuid: does the "
                          "[api] endpoint end with /v1?")
        return Answer("delivered", 202, uuid, "accepted")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing must never fail a shutdown
                LOG.debug("closing the openstacksdk connection failed", exc_info=True)


def _api_message(exc) -> str:
    details = getattr(exc, "details", None) or ""
    return f"{exc.status_code}: {details or exc.message}".strip()
