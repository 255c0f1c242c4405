"""The Masakari driver posts without openstacksdk's Resource layer: what reaches the API must
still be what openstacksdk sends for masakari-monitors (same request line, same headers in
the same order, same document), TLS verification stays on, and an expired or refused token
is answered by authenticating again. A small real HTTP(S) server records the requests."""
import http.server
import json
import ssl
import subprocess
import threading
import time
import uuid

import pytest

from monitors.drivers.masakari import MasakariDriver
from monitors.notification import VM, Notification
from monitors.states import Outcome
from tests.monitors.test_delivery import make_conf


class Recorder(http.server.ThreadingHTTPServer):
    """Answers POST /v1/notifications like masakari-api (202 + notification_uuid), or with
    the statuses queued in ``answers``; keeps (request line, headers, body) of each.
    ``moved_to``: an endpoint that moved instead, answering every POST with
    ``moved_status`` and a Location there (same path)."""

    def __init__(self, tls: ssl.SSLContext | None = None, moved_to: str | None = None,
                 moved_status: int = 307):
        self.seen, self.answers = [], []
        self.hang_up = False  # close each connection after its answer, without saying so
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.seen.append((self.requestline, list(self.headers.items()), body))
                if moved_to:
                    self.send_response(moved_status)
                    self.send_header("Location", moved_to + self.path[len("/v1"):])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = outer.answers.pop(0) if outer.answers else 202
                doc = ({"notification": {"notification_uuid": str(uuid.uuid4())}}
                       if status == 202 else
                       {"error": {"code": status, "title": "Unauthorized",
                                  "message": "The request you have made requires "
                                             "authentication."}})
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = outer.hang_up

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self):
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}/v1"

    def close(self):
        self.shutdown()
        self.server_close()


@pytest.fixture
def recorder():
    server = Recorder()
    yield server
    server.close()


def vm():
    return Notification.create(VM, "wire-host", {
        "event": "LIFECYCLE", "instance_uuid": str(uuid.uuid4()),
        "vir_domain_event": "STOPPED_FAILED"})


def sdk_send(conf, note):
    """What masakari-monitors does: openstacksdk's instance_ha on the [api] session."""
    import openstack.connection
    from keystoneauth1 import loading as ks_loading

    auth = ks_loading.load_auth_from_conf_options(conf, "api")
    session = ks_loading.load_session_from_conf_options(conf, "api", auth=auth)
    conn = openstack.connection.Connection(session=session, region_name=conf.api.region,
                                           interface=conf.api.api_interface,
                                           instance_ha_api_version="1")
    try:
        return conn.instance_ha.create_notification(**note.to_dict())
    finally:
        conn.close()


def test_the_post_is_what_openstacksdk_sends(tmp_path, recorder):
    conf = make_conf(tmp_path, recorder.endpoint)
    note = vm()
    sdk_send(conf, note)
    driver = MasakariDriver(conf)
    try:
        answers = [driver.send(note), driver.send(vm())]  # the second on the kept connection
    finally:
        driver.close()
    assert [a.outcome for a in answers] == [Outcome.DELIVERED, Outcome.DELIVERED]
    (sdk_line, sdk_headers, sdk_body), (line, headers, body), _ = recorder.seen
    assert line == sdk_line == "POST /v1/notifications HTTP/1.1"
    assert headers == sdk_headers  # names, values and order
    assert json.loads(body) == json.loads(sdk_body) == {"notification": note.to_dict()}


def test_a_connection_the_server_closed_meanwhile_is_not_a_failed_post(tmp_path, recorder):
    conf = make_conf(tmp_path, recorder.endpoint)
    recorder.hang_up = True  # as a server whose keep-alive timeout passed between two POSTs
    driver = MasakariDriver(conf)
    try:
        answers = []
        for _ in range(3):
            answers.append(driver.send(vm()))
            time.sleep(0.2)
    finally:
        driver.close()
    assert [a.outcome for a in answers] == [Outcome.DELIVERED] * 3
    assert len(recorder.seen) == 3


def test_a_refused_token_is_answered_by_authenticating_again(tmp_path, recorder):
    conf = make_conf(tmp_path, recorder.endpoint)
    driver = MasakariDriver(conf)
    recorder.answers = [401]
    try:
        first = driver.send(vm())
        assert driver._session is None  # the session (and its token) is dropped
        second = driver.send(vm())
    finally:
        driver.close()
    assert first.outcome == Outcome.AUTH and first.status == 401
    assert "requires authentication" in first.message
    assert second.outcome == Outcome.DELIVERED


def test_tls_is_verified(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True,
                   capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = Recorder(tls)
    try:
        conf = make_conf(tmp_path, server.endpoint)
        untrusted = MasakariDriver(conf).send(vm())  # self-signed: not trusted by default
        conf.set_override("cafile", str(cert), group="api")
        trusting = MasakariDriver(conf)
        trusted = trusting.send(vm())
        trusting.close()
    finally:
        server.close()
    assert untrusted.outcome == Outcome.RETRY and "CERTIFICATE_VERIFY_FAILED" in \
        untrusted.message
    assert trusted.outcome == Outcome.DELIVERED
    assert len(server.seen) == 1


def test_a_proxy_from_the_environment_is_honoured(tmp_path, recorder, monkeypatch):
    """http_proxy set for the endpoint: the POST goes through the proxy (keystoneauth and
    requests handle it), as it did with openstacksdk."""
    proxy = Recorder()
    try:
        for name in ("no_proxy", "NO_PROXY", "https_proxy", "HTTPS_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.server_address[1]}")
        driver = MasakariDriver(make_conf(tmp_path, recorder.endpoint))
        answer = driver.send(vm())
        driver.close()
    finally:
        proxy.close()
    assert answer.outcome == Outcome.DELIVERED
    assert recorder.seen == []
    assert [line for line, _, _ in proxy.seen] == [
        f"POST {recorder.endpoint}/notifications HTTP/1.1"]


@pytest.mark.parametrize("status", [307, 308, 301])
def test_a_redirect_is_followed_re_posting_as_openstacksdk_did(tmp_path, recorder, status,
                                                              caplog):
    """keystoneauth (under openstacksdk, for masakari-monitors) follows a redirect with the
    same method and body; the thin POST hands the request to it, and stays there."""
    moved = Recorder(moved_to=recorder.endpoint, moved_status=status)
    conf = make_conf(tmp_path, moved.endpoint)
    driver = MasakariDriver(conf)
    notes = [vm(), vm()]
    try:
        answers = [driver.send(n) for n in notes]
    finally:
        driver.close()
        moved.close()
    assert [a.outcome for a in answers] == [Outcome.DELIVERED] * 2
    # the old place: the thin POST, keystoneauth's replay of it, then keystoneauth's second
    assert [line for line, _, _ in moved.seen] == ["POST /v1/notifications HTTP/1.1"] * 3
    assert [line for line, _, _ in recorder.seen] == ["POST /v1/notifications HTTP/1.1"] * 2
    assert [json.loads(body) for _, _, body in recorder.seen] == [
        {"notification": n.to_dict()} for n in notes]  # re-posted, unchanged, once each
    assert sum("posting through keystoneauth" in r.getMessage()
               for r in caplog.records) == 1              # said once, not per POST
