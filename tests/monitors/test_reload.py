"""`ha-monitors reload` (systemd's ExecReload) tells the truth, and a reload reloads: the
delivery worker takes the new [api], [delivery], [webhook] settings and driver list. Real
daemons, SIGHUP, the real masakari-api and a real HTTP receiver for the webhook."""
from __future__ import annotations

import json

import pytest

from monitors import config

from tests.helpers import cli, deliverer, wait_for, write_conf
from tests.monitors.test_delivery import Receiver


@pytest.fixture
def conf(tmp_path, masakari_api, host):
    return write_conf(tmp_path / "monitors.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint=masakari_api.endpoint)


def notify(conf, name):
    r = cli(conf, "notify", "--type", "PROCESS", "--payload",
            json.dumps({"event": "STOPPED", "process_name": name}))
    assert r.returncode == 0, r.stderr


def test_reload_command_waits_for_the_verdict(tmp_path, conf):
    r = cli(conf, "reload", "--daemon", "delivery")
    assert r.returncode == 1 and "delivery is not running" in r.stderr
    with deliverer(conf) as d:
        r = cli(conf, "reload", "--daemon", "delivery", "--pid", str(d.proc.pid))
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "delivery reloaded"
        good = conf.read_text()
        conf.write_text(good + "\n[delivery]\nhttp_timeout = soon\n")  # a value error
        r = cli(conf, "reload", "--daemon", "delivery")
        assert r.returncode == 1
        assert "refused the new configuration, the old one stays in force" in r.stderr
        assert "http_timeout" in r.stderr
        conf.write_text(good + "\n[delivery\n")  # not even parseable
        r = cli(conf, "reload", "--daemon", "delivery", "--pid", str(d.proc.pid))
        assert r.returncode == 1 and "refuses the new configuration" in r.stderr
        assert d.proc.poll() is None  # still running the old configuration
        conf.write_text(good)
        r = cli(conf, "reload", "--daemon", "delivery")
        assert r.returncode == 0, r.stderr
        # accepted, but an option that only applies at a restart is named
        conf.write_text(good.replace("debug = true", "debug = false"))
        r = cli(conf, "reload", "--daemon", "delivery")
        assert r.returncode == 0, r.stderr
        assert "not applied until restart: [DEFAULT] debug: logging is set up at start" \
            in r.stderr


def test_sighup_applies_the_webhook_url_and_a_new_driver(tmp_path, masakari_api, host):
    first, second = Receiver([]), Receiver([])
    try:
        conf = write_conf(tmp_path / "monitors.conf", hostname=host,
                          state_path=tmp_path / "state", endpoint=masakari_api.endpoint,
                          sections={"delivery": {"drivers": "masakari"}})
        base = conf.read_text()
        with deliverer(conf):
            notify(conf, "one")
            wait_for(lambda: len(masakari_api.notifications(hostname=host)) == 1, 20)
            # add the webhook driver
            conf.write_text(base.replace("[delivery]\n", "[delivery]\ndrivers = masakari,webhook\n", 1)
                            .replace("drivers = masakari\n", "", 1)
                            + f"\n[webhook]\nurl = {first.url}\n")
            assert cli(conf, "reload", "--daemon", "delivery").returncode == 0
            notify(conf, "two")
            wait_for(lambda: len(first.requests) == 1, 20, what="the new driver delivering")
            assert json.loads(first.requests[0][1])["payload"]["payload"]["process_name"] == "two"
            # move the webhook
            conf.write_text(conf.read_text().replace(first.url, second.url))
            assert cli(conf, "reload", "--daemon", "delivery").returncode == 0
            notify(conf, "three")
            wait_for(lambda: len(second.requests) == 1, 20, what="the new URL receiving")
            assert json.loads(second.requests[0][1])["payload"]["payload"]["process_name"] == "three"
            assert len(first.requests) == 1
            # and the [api] endpoint: a wrong one is applied too (rows wait, retried)
            conf.write_text(conf.read_text().replace(masakari_api.endpoint,
                                                     "http://127.0.0.1:9/v1"))
            assert cli(conf, "reload", "--daemon", "delivery").returncode == 0
            notify(conf, "four")
            wait_for(lambda: "masakari:pending/" in cli(conf, "outbox", "list", "--state",
                                                         "pending").stdout, 20)
            assert len(masakari_api.notifications(hostname=host)) == 3  # one, two, three
            conf.write_text(conf.read_text().replace("http://127.0.0.1:9/v1",
                                                     masakari_api.endpoint))
            assert cli(conf, "reload", "--daemon", "delivery").returncode == 0
            wait_for(lambda: len(masakari_api.notifications(hostname=host)) == 4, 20,
                     what="delivery after the endpoint is fixed")
            # each POSTed once: no reload re-sent what was delivered
            assert [(p.payload["process_name"], p.status)
                    for p in masakari_api.posts(hostname=host)] == \
                [("one", 202), ("two", 202), ("three", 202), ("four", 202)]
    finally:
        for r in (first, second):
            r.shutdown()
            r.server_close()


@pytest.mark.parametrize("group, key, value", [("api", "region", "RegionTwo"),
                                               ("api", "insecure", True),
                                               ("api", "auth_type", "none"),
                                               ("nova", "force_down", True)])
def test_an_override_stays_in_its_own_configuration(group, key, value):
    """A SIGHUP reload builds a second ConfigOpts beside the running one: what one of them
    is told must not leak into the other (oslo.config copies a registered OptGroup only
    shallowly, so the groups are built per registration)."""
    first = config.new_conf()
    first([], project="x", default_config_files=[])
    default = getattr(first[group], key)
    first.set_override(key, value, group=group)
    assert getattr(first[group], key) == value
    second = config.new_conf()
    second([], project="x", default_config_files=[])
    assert getattr(second[group], key) == default
