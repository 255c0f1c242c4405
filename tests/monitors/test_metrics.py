"""The Prometheus endpoint as an operator scrapes it: real daemons (ha-processmonitor with a
real stand-in process, `ha-monitors deliver`) sharing one outbox, the real masakari-api,
scraped over HTTP and parsed with prometheus_client's own parser."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitors.metrics import parse_bind
from tests.fixtures.masakari_api import free_port
from tests.helpers import BIN, Daemon, cli, deliverer, wait_for, write_conf
from tests.processmonitor.conftest import Standins, fail, write_list

NOVA = "fake-nova-compute"


def scrape(port: int) -> list:
    """Every sample of one scrape as (name, labels, value)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        body = resp.read().decode()
    return [(s.name, s.labels, s.value)
            for family in text_string_to_metric_families(body) for s in family.samples]


def value(samples, name: str, **labels) -> float | None:
    """Sum of the samples called ``name`` whose labels include ``labels``; None if none."""
    found = [v for n, lab, v in samples if n == name and labels.items() <= lab.items()]
    return sum(found) if found else None


def metric_is(port, name, predicate, what, timeout=20.0, **labels):
    return wait_for(lambda: predicate(value(scrape(port), name, **labels)), timeout,
                    interval=0.2, what=f"{name}{labels or ''} {what}")


@pytest.fixture
def standins():
    s = Standins()
    yield s
    s.cleanup()


def test_scrape_shows_detection_outbox_delivery_and_sources(tmp_path, masakari_api, host,
                                                            standins):
    """ha-processmonitor (API unreachable) detects a failed process: the scrape shows the
    event by type, the source down, the row pending and the unreachable answers; then a
    separate `ha-monitors deliver` drains the shared outbox and the processmonitor's scrape
    (read from the outbox, not its own bookkeeping) shows it delivered; the deliverer's
    shows the 202, the latency and, for a re-sent notification, the 409."""
    stamps = tmp_path / "stamps"
    standins.start(NOVA)
    plist = write_list(tmp_path / "process_list.yaml", [
        {"process_name": standins.name(NOVA), "restart_command": fail(stamps, "nova")}])
    pm_port, d_port, dead = free_port(), free_port(), free_port()
    pm_conf = write_conf(
        tmp_path / "pm.conf", hostname=host, state_path=tmp_path / "state",
        endpoint=f"http://127.0.0.1:{dead}/v1",  # nothing listens: deliveries stay pending
        sections={"process": {"process_list_path": plist, "check_interval": 2,
                              "restart_retries": 0, "restart_interval": 0},
                  "processmonitor": {"command_timeout": 5, "restart_grace": 2},
                  "metrics": {"bind": f"127.0.0.1:{pm_port}"}})
    d_conf = write_conf(tmp_path / "deliver.conf", hostname=host,
                        state_path=tmp_path / "state", endpoint=masakari_api.endpoint,
                        sections={"metrics": {"bind": f"127.0.0.1:{d_port}"}})
    pm_labels = {"daemon": "processmonitor", "source": "processes"}
    with Daemon("processmonitor", pm_conf) as pm:
        s = scrape(pm_port)
        assert value(s, "ha_monitors_source_up", **pm_labels) == 1
        assert value(s, "ha_monitors_outbox_up") == 1
        assert value(s, "ha_monitors_outbox_depth") == 0
        assert value(s, "ha_monitors_last_event_timestamp_seconds") is None  # nothing yet
        assert value(s, "process_resident_memory_bytes") > 0  # the process collector

        standins.kill(NOVA, sig=signal.SIGKILL)  # its restart command fails → STOPPED
        metric_is(pm_port, "ha_monitors_events_detected_total", lambda v: v == 1,
                  "== 1", type="PROCESS", outcome="queued", **pm_labels)
        s = scrape(pm_port)
        assert value(s, "ha_monitors_source_up", **pm_labels) == 0, "restart failed"
        assert value(s, "ha_monitors_outbox_notifications", state="pending") == 1
        assert value(s, "ha_monitors_outbox_notifications", state="delivered") == 0
        assert value(s, "ha_monitors_outbox_depth") == 1
        assert value(s, "ha_monitors_outbox_oldest_pending_age_seconds") > 0
        assert value(s, "ha_monitors_last_event_timestamp_seconds", **pm_labels) > 0
        metric_is(pm_port, "ha_monitors_delivery_answers_total", lambda v: v and v >= 1,
                  ">= 1", driver="masakari", outcome="retry", code="none")
        assert value(scrape(pm_port), "ha_monitors_delivery_latency_seconds_count",
                     driver="masakari") in (None, 0)

        with deliverer(d_conf, log=tmp_path / "deliver.log"):
            metric_is(pm_port, "ha_monitors_outbox_notifications", lambda v: v == 1,
                      "== 1", state="delivered")
            s = scrape(pm_port)
            assert value(s, "ha_monitors_outbox_notifications", state="pending") == 0
            assert value(s, "ha_monitors_outbox_depth") == 0
            assert value(s, "ha_monitors_outbox_oldest_pending_age_seconds") == 0
            stored = masakari_api.notifications(type="PROCESS", hostname=host)
            assert [n["payload"]["event"] for n in stored] == ["STOPPED"]

            s = scrape(d_port)
            assert value(s, "ha_monitors_delivery_answers_total", driver="masakari",
                         outcome="delivered", code="202") >= 1
            assert value(s, "ha_monitors_delivery_latency_seconds_count",
                         driver="masakari") >= 1
            assert value(s, "ha_monitors_delivery_latency_seconds_sum", driver="masakari") > 0
            assert value(s, "ha_monitors_outbox_notifications", state="delivered") == 1

            # The same notification (same generated_time) sent again: masakari answers 409.
            args = ("notify", "--type", "VM", "--generated-time", "2024-05-01T10:00:00",
                    "--payload", f'{{"event": "LIFECYCLE", "instance_uuid": "{uuid.uuid4()}",'
                                 ' "vir_domain_event": "STOPPED_FAILED"}')
            for n in (2, 3):
                assert cli(d_conf, *args).returncode == 0
                metric_is(pm_port, "ha_monitors_outbox_notifications", lambda v, n=n: v == n,
                          f"== {n}", state="delivered")
            assert value(scrape(d_port), "ha_monitors_delivery_answers_total",
                         driver="masakari", outcome="duplicate", code="409") >= 1
        assert pm.proc.poll() is None


def test_busy_port_is_logged_and_the_daemon_keeps_delivering(tmp_path, masakari_api, host):
    """A port already in use is a clear error in the log, not a dead daemon: it still
    delivers; SIGHUP with a free port starts the endpoint."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy = blocker.getsockname()[1]
        conf = write_conf(tmp_path / "monitors.conf", hostname=host,
                          state_path=tmp_path / "state", endpoint=masakari_api.endpoint,
                          sections={"metrics": {"bind": f"127.0.0.1:{busy}"}})
        with deliverer(conf) as d:
            wait_for(lambda: f"[metrics] bind = 127.0.0.1:{busy}: cannot listen"
                     in d.log_text(), 10, what="the busy-port error in the log")
            assert "Each daemon needs its own" in d.log_text()
            assert cli(conf, "notify", "--type", "VM", "--payload",
                       f'{{"event": "LIFECYCLE", "instance_uuid": "{uuid.uuid4()}", '
                       '"vir_domain_event": "STOPPED_FAILED"}').returncode == 0
            wait_for(lambda: masakari_api.notifications(type="VM", hostname=host),
                     20, interval=0.2, what="delivered despite the busy metrics port")
            assert d.proc.poll() is None

            port = free_port()
            conf.write_text(conf.read_text().replace(f":{busy}", f":{port}"))
            d.signal(signal.SIGHUP)
            wait_for(lambda: _listening(port), 10, interval=0.2,
                     what="the endpoint on the new port after SIGHUP")
            assert value(scrape(port), "ha_monitors_outbox_notifications",
                         state="delivered") == 1


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("bind, message", [
    ("9461", "expected HOST:PORT"),
    (":9461", "expected HOST:PORT"),
    ("::1:9461", "an IPv6 address goes in brackets"),
    ("[::1]9461", "expected [IPv6]:PORT"),
    ("[fe80::zz]:9461", "'fe80::zz' is not an IPv6 address"),
    ("127.0.0.1:99999", "port '99999' is not a number from 1 to 65535"),
    ("127.0.0.1:http", "port 'http' is not a number"),
])
def test_bad_bind_is_refused_by_check_config_and_the_daemon(tmp_path, bind, message):
    conf = write_conf(tmp_path / "monitors.conf", hostname="h1", state_path=tmp_path,
                      endpoint=None, sections={"metrics": {"bind": bind}})
    r = cli(conf, "check-config")
    assert r.returncode == 1
    assert f"error: [metrics] bind: {bind!r}: {message}" in r.stderr
    d = subprocess.run([str(BIN / "ha-monitors"), "--config-file", str(conf), "deliver"],
                       capture_output=True, text=True, timeout=60)
    assert d.returncode == 2
    assert f"configuration error: [metrics] bind: {bind!r}: {message}" in d.stderr


def test_bind_without_prometheus_client_is_a_configuration_problem(tmp_path):
    """prometheus-client is installed in this venv and others share it, so its absence is
    simulated in a child process by making its import fail (the only stand-in here)."""
    conf = write_conf(tmp_path / "monitors.conf", hostname="h1", state_path=tmp_path,
                      endpoint=None, sections={"metrics": {"bind": "127.0.0.1:9461"}})
    code = ("import sys; sys.modules['prometheus_client'] = None; "
            "from monitors.cli import main; "
            f"sys.exit(main(['--config-file', {str(conf)!r}, 'check-config']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1
    assert "error: [metrics] bind: set, but prometheus-client is not installed" in r.stderr


def test_bind_forms_an_operator_writes():
    assert parse_bind("127.0.0.1:9461") == ("127.0.0.1", 9461)
    assert parse_bind("[::1]:9462") == ("::1", 9462)
    assert parse_bind("mgmt.example.org:9463") == ("mgmt.example.org", 9463)
