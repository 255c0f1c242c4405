"""`ha-monitors status` counts what needs an operator, and lets the operator clear it:
acknowledging a rejected notification, a one-off `deliver` that ended, the age of a row
retried by hand, a refused SIGHUP while the file on disk stays broken."""
from __future__ import annotations

import os
import signal
import time

import pytest

from tests.helpers import Daemon, cli, deliverer, wait_for, write_conf


@pytest.fixture
def conf(tmp_path, masakari_api, host):
    return write_conf(tmp_path / "monitors.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint=masakari_api.endpoint)


def rejected(conf) -> None:
    r = cli(conf, "notify", "--type", "COMPUTE_HOST", "--hostname", "not-in-masakari",
            "--payload", '{"event": "STOPPED"}', "--wait")
    assert r.returncode == 4, r.stdout + r.stderr


def test_ack_clears_a_rejected_notification_and_is_recorded(tmp_path, conf):
    rejected(conf)
    with deliverer(conf):
        wait_for(lambda: os.path.exists(tmp_path / "state" / "delivery.status.json"), 10)
        r = cli(conf, "status")
        assert r.returncode == 2 and "notification 1 rejected" in r.stdout
        assert "outbox ack 1" in r.stdout  # says the way out
        assert cli(conf, "outbox", "ack", "1", "--note", "host retired").returncode == 0
        r = cli(conf, "status")
        assert r.returncode == 0, r.stdout
        assert "1 rejected" in r.stdout  # still counted and kept, no longer an alarm
    r = cli(conf, "history")
    assert "acknowledged by the operator (rejected, not retried): host retired" in r.stdout
    r = cli(conf, "outbox", "ack", "1")  # it is rejected and acknowledged: fine again
    assert r.returncode == 0
    notify = cli(conf, "notify", "--type", "PROCESS", "--payload",
                 '{"event": "STOPPED", "process_name": "x"}')
    assert notify.returncode == 0
    r = cli(conf, "outbox", "ack", "2")
    assert r.returncode == 1 and "only rejected or expired" in r.stderr


def test_a_one_off_deliver_that_ended_is_not_critical(tmp_path, conf):
    d = deliverer(conf, env={"NOTIFY_SOCKET": ""})  # run by hand, not by systemd
    d.start(wait_ready=False)
    status_file = tmp_path / "state" / "delivery.status.json"
    wait_for(lambda: status_file.exists() and '"running"' in status_file.read_text(), 20)
    d.signal(signal.SIGTERM)
    assert d.proc.wait(20) == 0
    r = cli(conf, "status")
    assert r.returncode == 0, r.stdout
    assert "delivery  stopped" in r.stdout
    r = cli(conf, "status", "--daemon", "delivery")  # expected to run: then it is critical
    assert r.returncode == 2 and "delivery: stopped" in r.stdout
    d.notify.close()


def test_pending_age_after_retry_counts_from_the_retry(tmp_path, conf):
    import json
    detected = time.monotonic()
    rejected(conf)
    time.sleep(3)
    retried = time.monotonic()
    assert cli(conf, "outbox", "retry", "1").returncode == 0
    r = cli(conf, "status", "--pending-warn", "2", "--pending-crit", "100")
    assert "oldest undelivered" not in r.stdout, r.stdout
    age = json.loads(cli(conf, "status", "--json").stdout)["outbox"]["oldest_pending_age"]
    assert age <= time.monotonic() - retried + 0.2
    assert age < time.monotonic() - detected - 2.5


def test_refused_reload_is_a_warning_until_the_file_is_fixed(tmp_path, conf):
    with deliverer(conf) as d:
        good = conf.read_text()
        conf.write_text(good + "\n[delivery]\nhttp_timeout = soon\n")
        d.signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in cli(conf, "status").stdout, 15,
                 what="status showing the refused reload")
        r = cli(conf, "status")
        assert r.returncode == 1, r.stdout
        assert "delivery: reload refused at" in r.stdout and "http_timeout" in r.stdout
        assert "the file on disk would not start cleanly" in r.stdout
        time.sleep(6)
        assert cli(conf, "status").returncode == 1  # still broken on disk: still a warning
        conf.write_text(good)  # fixed on disk (not reloaded yet)
        wait_for(lambda: cli(conf, "status").returncode == 0, 20,
                 what="the warning clears once the file is fixed")
        assert "configuration on disk is valid again" in d.log_text()
