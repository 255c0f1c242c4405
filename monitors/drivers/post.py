"""A JSON POST on a keystoneauth session, without requests' per-call machinery.

keystoneauth finds the endpoint (catalog, interface, region, version) and provides the
token (re-authenticating before it expires); the POST goes over one kept-alive http.client
connection per thread, with the session's TLS verification, client certificate and
timeout, and the headers keystoneauth and requests would send, in their order. In a storm
requests' environment merging and keystoneauth's per-call bookkeeping cost more CPU than
the POST itself. When an HTTP proxy is configured in the environment for the endpoint, the
auth plugin asks for connection parameters, or keystoneauth's HTTP debug log or timing is
on, it posts through keystoneauth instead (which honours them). So it does from the first
redirect on (3xx with a Location: an endpoint moved to https, a load balancer), which
keystoneauth follows re-posting, as it did for masakari-monitors."""
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

LOG = logging.getLogger(__name__)
REDIRECTS = (301, 302, 303, 305, 307, 308)  # keystoneauth's: it follows these, same method


class Response:
    """What an answer's reader needs: status, url, body, json()."""

    def __init__(self, status: int, url: str, body: bytes):
        self.status_code, self.url, self.body = status, url, body

    def json(self):
        return json.loads(self.body)


class Poster:
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
            # A proxy from the environment, connection parameters from the auth plugin,
            # keystoneauth's HTTP debug log or timing collection (`[api] split_loggers`,
            # `collect_timing`, debug = true): keystoneauth and requests know what to do
            # with those, so let them.
            self._fallback = bool(
                requests.utils.get_environ_proxies(self._base)
                or self.session.get_auth_connection_params(auth=self.adapter.auth)
                or getattr(self.session, "_collect_timing", False)
                or getattr(self.session, "_split_loggers", False)
                or logging.getLogger("keystoneauth1.session").isEnabledFor(logging.DEBUG))
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
        if resp.status in REDIRECTS and resp.getheader("Location"):
            LOG.warning("%s answered %s, redirecting to %s: posting through keystoneauth "
                        "from now on (it follows redirects); point [api] at the final "
                        "endpoint to avoid the extra round trip", url, resp.status,
                        resp.getheader("Location"))
            self._fallback = True
            self.drop()
            resp = self.adapter.post(path, json=doc, raise_exc=False)
            return resp.status_code, resp.url, resp.content
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
