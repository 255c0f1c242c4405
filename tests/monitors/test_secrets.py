"""A credential in [webhook] url (user:password@, ?token=...) never shows: not in the
daemon's log, the outbox file, history, the status file or STATUS=; the URL is still
recognisable (scheme, host, path, query keys)."""
import socket
import subprocess

from monitors.secrets import mask_text, mask_url
from tests.helpers import cli, deliverer, wait_for, write_conf

TOKEN = "tOkEn-8f2a71c9"
PASSWORD = "pAsS-31f0c2"


def test_mask_url_and_text():
    assert mask_url(f"https://hook:{PASSWORD}@ops.example/in?token={TOKEN}&team=a") == \
        "https://hook:***@ops.example/in?token=***&team=***"
    assert mask_url("http://ops.example/in") == "http://ops.example/in"
    text = (f"ConnectionError: HTTPConnectionPool(host='h', port=9): Max retries exceeded "
            f"with url: /in?token={TOKEN} (Caused by x) see https://u:{PASSWORD}@h/x?t={TOKEN}.")
    masked = mask_text(text)
    assert TOKEN not in masked and PASSWORD not in masked
    assert "url: /in?token=*** (Caused by x)" in masked and "https://u:***@h/x?t=***" in masked


def test_webhook_credentials_never_shown(tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens: every attempt fails with a message quoting the URL
    url = f"http://hook:{PASSWORD}@127.0.0.1:{port}/in?token={TOKEN}"
    state = tmp_path / "state"
    conf = write_conf(tmp_path / "m.conf", hostname="h1", state_path=state, endpoint=None,
                      sections={"delivery": {"drivers": "webhook"}, "webhook": {"url": url},
                                "DEFAULT": {"debug": "true"}})
    with deliverer(conf) as daemon:
        assert cli(conf, "notify", "--type", "COMPUTE_HOST", "--payload",
                   '{"event": "STOPPED"}').returncode == 0
        wait_for(lambda: "not delivered via webhook" in daemon.log_text(), 30,
                 what="a failed attempt")
        wait_for(lambda: any("API:" in m.get("STATUS", "") for m in daemon.notify.drain()), 30,
                 what="STATUS= naming the failure")
        statuses = [m.get("STATUS", "") for m in daemon.notify.drain()]
        wait_for(lambda: "Max retries" in (state / "delivery.status.json").read_text(), 30,
                 what="status file naming the failure")
        shown = {
            "log": daemon.log_text(),
            "history": cli(conf, "history").stdout,
            "outbox show": cli(conf, "outbox", "show", "1", "--json").stdout,
            "status file": (state / "delivery.status.json").read_text(),
            "STATUS=": "\n".join(statuses),
            "check-config": cli(conf, "check-config").stderr,
        }
    # every byte of the outbox database (and its WAL)
    shown["outbox file"] = subprocess.run(
        ["sh", "-c", f"cat {state}/outbox.sqlite*"], capture_output=True).stdout.decode(
        errors="replace")
    assert "token=***" in shown["history"] + shown["outbox show"]
    for where, text in shown.items():
        assert TOKEN not in text, where
        assert PASSWORD not in text, where
