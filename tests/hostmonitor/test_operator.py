"""notify_operator goes through the configured operator driver (a webhook receiver here),
never to Masakari; with profile=pets a management outage only notifies the operator."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import wait_for
from tests.hostmonitor.test_links import payloads, start


class Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook(topo):
    Receiver.received = []

    def serve():
        server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)  # inside the daemon's ns
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server
    server = topo.d.run(serve)
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", Receiver.received
    server.shutdown()


@pytest.mark.slow
def test_pets_management_down_notifies_operator_only(links_up, tmp_path, webhook):
    topo = links_up
    url, received = webhook
    host = topo.new_host()
    d = start(topo, tmp_path, host, profile="pets", operator_driver="webhook",
              sections={"delivery": {"drivers": "masakari,webhook"}, "webhook": {"url": url}})
    try:
        topo.admin("m0", "down")
        wait_for(lambda: len(received) >= 1, 10, what="operator notice")
        doc = received[0]["payload"]
        assert doc["type"] == "COMPUTE_HOST" and doc["hostname"] == host
        assert doc["payload"] == {"event": "STOPPED", "cluster_status": "ONLINE",
                                  "host_status": "UNKNOWN"}
        topo.admin("m0", "up")
        topo.d.ip("addr", "replace", "10.77.0.2/24", "dev", "m0")
        wait_for(lambda: len(received) >= 2, 10, what="operator recovery notice")
        assert received[1]["payload"]["payload"]["event"] == "STARTED"
        assert payloads(topo, host) == []  # Masakari never got the operator's notices
    finally:
        d.stop()
