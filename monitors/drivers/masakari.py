"""The Masakari driver: the notification POST that openstacksdk's ``instance_ha`` sends for
masakari-monitors (same URL, body and headers), on a keystoneauth session built from the
``[api]`` options exactly as masakari-monitors configures it.

The POST goes through monitors.drivers.post on a keystoneauth adapter for the service
type and version, as the SDK's proxy is (so the endpoint is found the same way); a 401
drops the session, so the next attempt authenticates again. openstacksdk's Resource layer
cost more CPU than the POST in a storm, and openstacksdk is ~10 MiB of a daemon's memory:
it is imported only by the resurrect driver, which queries hosts.

An HTTP error is Masakari's own answer only when its body is Masakari's fault document
(``{"badRequest": {"code": 400, "message": ...}}``: one key, whose ``code`` is the status).
Anything else (an HTML 404 or 413 of a proxy, a load balancer's 502 during an upgrade) is
retried and worded as what it is, so a host failure is never parked as "rejected by
masakari" because something in between answered. Masakari's 409 means three things
(masakari 22.0.0): "... is duplicate" (we already delivered it), "... is ignored as the
host is already under maintenance" and other conflicts; only the first counts as delivered,
the others are held (kept pending, retried until Masakari takes them).

``recovery_status`` reads back what masakari-engine did with a delivered notification
(GET /v1/notifications/<uuid>, microversion 1.0) for the delivery side's follow-up
(monitors/follow.py); it only reads and classifies, the policy is the follower's."""
from __future__ import annotations

import http.client
import json
import logging
import urllib.parse

from monitors.drivers import Answer, Driver, classify, post
from monitors.notification import Notification
from monitors.secrets import mask_text, mask_url
from monitors.states import Outcome

LOG = logging.getLogger(__name__)
# Masakari's notification statuses (masakari 22 objects/fields.py NotificationStatus).
STATUSES = ("new", "running", "error", "failed", "ignored", "finished")


class MasakariDriver(Driver):
    name = "masakari"

    def __init__(self, conf):
        super().__init__(conf)
        self._session = None
        self._conn = None
        self._poster: post.Poster | None = None
        self._adapter = None

    def _ks_session(self):
        """The keystoneauth session of the ``[api]`` options (auth plugin, TLS, timeout)."""
        if self._session is None:
            from keystoneauth1 import loading as ks_loading

            auth = ks_loading.load_auth_from_conf_options(self.conf, "api")
            session = ks_loading.load_session_from_conf_options(self.conf, "api", auth=auth)
            # keystoneauth has no timeout by default: an unanswered POST must never hang.
            session.timeout = self.conf.api.timeout or self.conf.delivery.http_timeout
            self._session = session
        return self._session

    def _connection(self):
        """openstacksdk on the same session: for the resurrect driver's host and
        notification queries (imported only then; the notification POST does not use it)."""
        if self._conn is None:
            import openstack.connection

            api = self.conf.api
            self._conn = openstack.connection.Connection(
                session=self._ks_session(), region_name=api.region,
                interface=api.api_interface,
                instance_ha_api_version=self._version())
        return self._conn

    def _version(self) -> str:
        return self.conf.api.api_version.lstrip("v") or "1"

    def _ks_adapter(self):
        """What openstacksdk's instance_ha proxy is: an adapter for the service type with
        the configured version, so the endpoint is found the same way (for the POST and
        the follow-up's GET alike)."""
        if self._adapter is None:
            from keystoneauth1 import adapter

            api = self.conf.api
            self._adapter = adapter.Adapter(
                self._ks_session(), service_type="instance-ha",
                interface=api.api_interface, region_name=api.region,
                version=self._version(), allow_version_hack=True)
        return self._adapter

    def send(self, notification: Notification) -> Answer:
        from keystoneauth1 import exceptions as ks_exc

        poster = None
        try:
            poster = self._poster
            if poster is None:
                poster = self._poster = post.Poster(self._ks_adapter())
            status, url, body = poster.post(
                "/notifications", {"notification": notification.to_dict()})
        except ks_exc.Unauthorized as exc:
            self.close()
            return Answer(Outcome.AUTH, 401, None, mask_text(str(exc)))
        except (ks_exc.ClientException, OSError, http.client.HTTPException) as exc:
            if poster is not None:
                poster.drop()
            return Answer(Outcome.RETRY, None, None,
                          mask_text(f"{type(exc).__name__}: {exc}"))
        if status >= 400:
            answer = self.classify_error(status, post.Response(status, url, body))
            if answer.outcome == Outcome.AUTH:
                self.close()  # authenticate again on the next attempt
            return answer
        uuid = None
        if 200 <= status < 300:
            try:
                uuid = (json.loads(body).get("notification") or {}).get("notification_uuid")
            except (ValueError, AttributeError):
                uuid = None
        if not uuid:
            # e.g. a 300 from the version page: the endpoint lacks its /v1
            return Answer(Outcome.RETRY, None, None, "answer without notification_uuid: does "
                          "the [api] endpoint end with /v1?")
        return Answer(Outcome.DELIVERED, status, uuid, "accepted")

    def recovery_status(self, remote_id: str) -> tuple[str | None, str]:
        """What masakari-engine did with a delivered notification: (its status, detail),
        or (None, why it could not be read). Never raises for a bad answer.

        GET /v1/notifications/<uuid> at microversion 1.0 on the delivery's session: from
        1.1 on masakari-api asks the engine over RPC for the recovery workflow details
        and answers 500 when no engine answers, though the status is in its database."""
        from keystoneauth1 import exceptions as ks_exc

        path = f"/notifications/{urllib.parse.quote(str(remote_id), safe='')}"
        try:
            resp = self._ks_adapter().get(path, microversion="1.0", raise_exc=False,
                                          headers={"Accept": "application/json"})
        except ks_exc.Unauthorized as exc:
            self._reauthenticate()
            return None, mask_text(f"401: {exc}")
        except (ks_exc.ClientException, OSError, http.client.HTTPException) as exc:
            return None, mask_text(f"{type(exc).__name__}: {exc}")
        status = resp.status_code
        response = post.Response(status, resp.url, resp.content or b"")
        if status in (401, 403):
            self._reauthenticate()
            return None, mask_text(f"{status}: {_error_text(response)}")
        if status >= 400:
            fault = masakari_fault(status, response)
            if fault is None:
                where = mask_url(response.url or self.conf.api.endpoint or "?")
                return None, f"HTTP {status} from {where} (not a Masakari answer)"
            return None, f"{status}: {fault}"
        try:
            doc = response.json()["notification"]
            found, uuid = doc["status"], doc.get("notification_uuid")
        except (ValueError, KeyError, TypeError) as exc:
            return None, (f"HTTP {status}: not a Masakari notification document "
                          f"({type(exc).__name__}: {exc}): does the [api] endpoint end "
                          "with /v1?")
        if uuid not in (None, remote_id):
            return None, f"HTTP {status}: answer is about notification {uuid}, not {remote_id}"
        if found not in STATUSES:
            return None, f"HTTP {status}: unknown notification status {found!r}"
        return found, f"updated_at {doc.get('updated_at') or doc.get('created_at') or '?'}"

    def _reauthenticate(self) -> None:
        """A refused token on the follow-up's GET: get a new one at the next call, without
        closing the connections a delivery thread may be posting on."""
        session = self._session
        if session is not None:
            try:
                session.invalidate()
            except Exception:  # noqa: BLE001 - then the next POST's 401 drops the session
                LOG.debug("invalidating the token failed", exc_info=True)

    def close(self) -> None:
        poster, self._poster = self._poster, None
        self._adapter = None
        if poster is not None:
            poster.drop(everyone=True)
        conn, self._conn = self._conn, None
        self._session = None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing must never fail a shutdown
                LOG.debug("closing the openstacksdk connection failed", exc_info=True)

    def classify_error(self, status: int, response: post.Response) -> Answer:
        """An HTTP error answer (status >= 400) → outcome, from the status and who
        answered it."""
        if status in (401, 403):
            return Answer(Outcome.AUTH, status, None,
                          mask_text(f"{status}: {_error_text(response)}"))
        fault = masakari_fault(status, response)
        if fault is None:
            where = mask_url(response.url or self.conf.api.endpoint or "?")
            return Answer(Outcome.RETRY, status, None,
                          f"HTTP {status} from {where} (not a Masakari answer): retrying")
        if status == 409:
            if "is duplicate" in fault:
                return Answer(Outcome.DUPLICATE, status, None, f"409: {fault}")
            if "maintenance" in fault:
                return Answer(Outcome.HELD, status, None,
                              f"held: host on maintenance in Masakari (409: {fault})")
            return Answer(Outcome.HELD, status, None, f"held: conflict in Masakari (409: {fault})")
        return Answer(classify(status), status, None, f"{status}: {fault}")


def masakari_fault(status: int, response) -> str | None:
    """The message of Masakari's fault document (``{"<fault>": {"code": status, "message":
    ...}}``), or None when the body is not one: then someone else answered."""
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


def _error_text(response) -> str:
    """The message of an error document (Masakari's or keystonemiddleware's), else the
    start of the body."""
    try:
        doc = response.json()
        fault = next(iter(doc.values()))
        if isinstance(fault, dict) and isinstance(fault.get("message"), str):
            return fault["message"]
    except Exception:  # noqa: BLE001 - not a JSON document
        pass
    return response.body[:200].decode("utf-8", "replace").strip() or "no message"
