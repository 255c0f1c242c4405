"""The Masakari driver: the notification POST that openstacksdk's ``instance_ha`` sends for
masakari-monitors (same URL, body and headers), on a keystoneauth session built from the
``[api]`` options exactly as masakari-monitors configures it.

keystoneauth finds the endpoint (catalog, interface, region, version, as the SDK's proxy
does) and provides the token (re-authenticating before it expires; a 401 drops the session
so the next attempt authenticates again); the POST itself goes over one kept-alive
http.client connection with the session's TLS verification, client certificate and
timeout. openstacksdk's Resource layer and requests' per-call environment merging cost
more CPU than the POST in a storm, and openstacksdk alone is ~10 MiB of a daemon's memory,
so it is imported only by the resurrect driver, which queries hosts. When an HTTP proxy is
configured in the environment for the endpoint, the POST goes through keystoneauth and
requests as before (they honour the proxy).

An HTTP error is Masakari's own answer only when its body is Masakari's fault document
(``{"badRequest": {"code": 400, "message": ...}}``: one key, whose ``code`` is the status).
Anything else (an HTML 404 or 413 of a proxy, a load balancer's 502 during an upgrade) is
retried and worded as what it is, so a host failure is never parked as "rejected by
masakari" because something in between answered. Masakari's 409 means three things
(masakari 22.0.0): "... is duplicate" (we already delivered it), "... is ignored as the
host is already under maintenance" and other conflicts; only the first counts as delivered,
the others are held (kept pending, retried until Masakari takes them)."""
from __future__ import annotations

import http.client
import json
import logging
import os
import select
import ssl
import threading
import time
import urllib.parse

from monitors.drivers import Answer, Driver, classify
from monitors.notification import Notification
from monitors.secrets import mask_text, mask_url
from monitors.states import Outcome

LOG = logging.getLogger(__name__)


class MasakariDriver(Driver):
    name = "masakari"

    def __init__(self, conf):
        super().__init__(conf)
        self._session = None
        self._conn = None
        self._poster: _Poster | None = None

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

    def send(self, notification: Notification) -> Answer:
        from keystoneauth1 import exceptions as ks_exc

        poster = None
        try:
            poster = self._poster
            if poster is None:
                from keystoneauth1 import adapter

                api = self.conf.api
                # What openstacksdk's instance_ha proxy is: an adapter for the service type
                # with the configured version, so the endpoint is found the same way.
                poster = self._poster = _Poster(adapter.Adapter(
                    self._ks_session(), service_type="instance-ha",
                    interface=api.api_interface, region_name=api.region,
                    version=self._version(), allow_version_hack=True))
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
            answer = self.classify_error(status, _Response(status, url, body))
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

    def close(self) -> None:
        poster, self._poster = self._poster, None
        if poster is not None:
            poster.drop(everyone=True)
        conn, self._conn = self._conn, None
        self._session = None
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
            return Answer(Outcome.AUTH, status, None, mask_text(
                _api_message(exc, response) if exc is not None
                else f"{status}: {_error_text(response)}"))
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


class _Response:
    """What classify_error reads of an answer: status, url, json()."""

    def __init__(self, status: int, url: str, body: bytes):
        self.status_code, self.url, self.body = status, url, body

    def json(self):
        return json.loads(self.body)


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


class _Poster:
    """POST a JSON document to the service's endpoint over one kept-alive connection,
    with what keystoneauth and requests would send: the session's User-Agent and extra
    headers, requests' default headers, the token of the auth plugin."""

    def __init__(self, adapter):
        from keystoneauth1 import session as ks_session
        import requests.utils

        self.adapter, self.session = adapter, adapter.session
        # One connection per delivery thread: an http.client connection carries one
        # request at a time.
        self._local = threading.local()
        self._conns: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._base: str | None = None
        self._fallback = False
        self._auth: dict | None = None
        self._auth_until = 0.0
        agent = self.session.user_agent
        if not agent:  # as keystoneauth composes it when the session names no application
            determined = ks_session._determine_user_agent()
            agent = " ".join(filter(None, (determined, ks_session.DEFAULT_USER_AGENT)))
        # requests' defaults (User-Agent first, Accept-Encoding, Accept, Connection) with
        # keystoneauth's User-Agent in place of requests' own.
        self.headers = {**requests.utils.default_headers(), "User-Agent": agent,
                        "Content-Type": "application/json"}
        for k, v in (self.session.additional_headers or {}).items():
            self.headers.setdefault(k, v)

    # keystoneauth re-reads the token's expiry on every call (it re-authenticates well
    # before the token expires); asking it at most every few seconds is as safe and spares
    # a storm that parsing per POST. A refused token (401) drops the whole session anyway.
    AUTH_RECHECK = 5.0

    def _auth_headers(self) -> dict:
        now = time.monotonic()
        if self._auth is None or now >= self._auth_until:
            self._auth = self.session.get_auth_headers(auth=self.adapter.auth) or {}
            self._auth_until = now + self.AUTH_RECHECK
        return self._auth

    def _endpoint(self) -> str:
        if self._base is None:
            import requests.utils

            base = self.adapter.get_endpoint()
            if not base:
                from keystoneauth1 import exceptions as ks_exc

                raise ks_exc.EndpointNotFound()
            self._base = base.rstrip("/")
            # A proxy from the environment, or connection parameters from the auth plugin:
            # keystoneauth and requests know what to do with those, so let them.
            self._fallback = bool(requests.utils.get_environ_proxies(self._base) or
                                  self.session.get_auth_connection_params(
                                      auth=self.adapter.auth))
        return self._base

    def post(self, path: str, doc: dict) -> tuple[int, str, bytes]:
        """(status, url, body) of the answer; raises what keystoneauth raises for auth
        and endpoint failures, OSError / HTTPException for the connection."""
        base = self._endpoint()
        url = f"{base}/{path.lstrip('/')}"
        if self._fallback:
            resp = self.adapter.post(path, json=doc, raise_exc=False)
            return resp.status_code, resp.url, resp.content
        headers = dict(self.headers)
        content_type = headers.pop("Content-Type")
        headers.update(self._auth_headers())
        headers["Content-Type"] = content_type
        data = json.dumps(doc).encode()
        conn = self._connection(url)
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            # Host first (http.client), then the headers in requests' order, then the length.
            conn.putrequest("POST", target, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(data)))
            conn.endheaders(data)
            resp = conn.getresponse()
            body = resp.read()
        except BaseException:
            self.drop()
            raise
        encoding = (resp.getheader("Content-Encoding") or "").lower()
        if encoding in ("gzip", "deflate") and body:
            import zlib

            body = zlib.decompress(body, 16 + zlib.MAX_WBITS if encoding == "gzip"
                                   else zlib.MAX_WBITS)
        if resp.will_close:
            self.drop()
        return resp.status, url, body

    def _connection(self, url: str) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and conn.sock is not None:
            # The server may have closed an idle keep-alive connection: a readable idle
            # socket is at EOF (or has garbage); start a fresh one rather than fail a POST.
            idle = select.poll()
            idle.register(conn.sock, select.POLLIN)
            if idle.poll(0):
                self._forget(conn)
                conn = None
        if conn is None:
            parts = urllib.parse.urlsplit(url)
            timeout = self.session.timeout
            if parts.scheme == "https":
                conn = http.client.HTTPSConnection(parts.hostname, parts.port,
                                                   timeout=timeout,
                                                   context=self._tls_context())
            else:
                conn = http.client.HTTPConnection(parts.hostname, parts.port,
                                                  timeout=timeout)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _forget(self, conn) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
        conn.close()

    def _tls_context(self) -> ssl.SSLContext:
        """The session's verify (True: the CA bundle requests would use; a path; False)
        and cert (a file, or (cert, key))."""
        verify, cert = self.session.verify, self.session.cert
        if verify is False:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            if verify is True:
                from requests import certs

                verify = (os.environ.get("REQUESTS_CA_BUNDLE")
                          or os.environ.get("CURL_CA_BUNDLE") or certs.where())
            if os.path.isdir(verify):
                ctx = ssl.create_default_context(capath=verify)
            else:
                ctx = ssl.create_default_context(cafile=verify)
        if cert:
            if isinstance(cert, (tuple, list)):
                ctx.load_cert_chain(cert[0], cert[1])
            else:
                ctx.load_cert_chain(cert)
        return ctx

    def drop(self, everyone: bool = False) -> None:
        """Close this thread's connection (everyone: all threads', on close())."""
        if not everyone:
            conn = getattr(self._local, "conn", None)
            if conn is not None:
                self._forget(conn)
            return
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
