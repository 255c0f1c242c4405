"""ha-instancemonitor against a libvirtd that asks for SASL, with kolla-ansible's auth.conf.

kolla-ansible enables SASL on libvirt by default and hands masakari-instancemonitor the
credentials in a libvirt auth.conf (tests/data/deployments/kolla-ansible/auth.conf, rendered
from its auth.conf.j2). A read-only connection opened without an auth callback cannot use
that file (SASL: "No worthy mechs found"); instancemonitor/libvirt_auth.py opens as
masakari-monitors does. Real libvirtd, real SASL (SCRAM-SHA-256, sasldb), real API."""
from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from tests.fixtures.libvirtd import SaslLibvirtd
from tests.helpers import Daemon, wait_for, write_conf
from tests.instancemonitor.conftest import vm_events

AUTH_CONF = Path(__file__).resolve().parents[1] / "data" / "deployments" / "kolla-ansible" \
    / "auth.conf"


@pytest.fixture
def sasl_libvirtd(tmp_path):
    creds = configparser.ConfigParser()
    creds.read(AUTH_CONF)
    d = SaslLibvirtd(tmp_path / "libvirtd", creds["credentials-default"]["authname"],
                     creds["credentials-default"]["password"])
    d.workdir.mkdir()
    d.start()
    d.hold()
    yield d
    d.stop()


def _daemon(tmp_path, masakari_api, libvirtd, host, env) -> Daemon:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    conf = write_conf(tmp_path / "monitors.conf", hostname=host, state_path=state,
                      endpoint=masakari_api.endpoint,
                      sections={"libvirt": {"connection_uri": libvirtd.uri},
                                "instancemonitor": {"reconnect_initial_interval": 0.1,
                                                    "reconnect_max_interval": 0.5}})
    # no ~/.config/libvirt/auth.conf to fall back on (the units run with ProtectHome=yes)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    daemon = Daemon("instancemonitor", conf,
                    env={"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), **env})
    if "LIBVIRT_AUTH_FILE" not in env:
        daemon.env.pop("LIBVIRT_AUTH_FILE", None)
    return daemon


def test_kolla_auth_conf_via_libvirt_auth_file_connects_and_reports(
        tmp_path, sasl_libvirtd, masakari_api, host):
    daemon = _daemon(tmp_path, masakari_api, sasl_libvirtd, host,
                     {"LIBVIRT_AUTH_FILE": str(AUTH_CONF)})
    try:
        daemon.start()
        wait_for(lambda: "connected to libvirt" in daemon.log_text(), 10, what="connected")
        dom = sasl_libvirtd.create("sasl-vm")
        dom.destroy()
        wait_for(lambda: vm_events(masakari_api, host), 15, what="VM notification stored")
        assert vm_events(masakari_api, host) == [("LIFECYCLE", dom.UUIDString(),
                                                  "STOPPED_DESTROYED")]
    finally:
        daemon.stop()
        daemon.notify.close()


def test_without_credentials_the_daemon_says_which_are_missing_and_where_to_put_them(
        tmp_path, sasl_libvirtd, masakari_api, host):
    daemon = _daemon(tmp_path, masakari_api, sasl_libvirtd, host, {})
    try:
        ready = daemon.start().notify.wait_for("READY")
        assert "unreachable" in ready["STATUS"], ready
        log = daemon.log_text()
        assert "asks for credentials nobody can type" in log
        assert "/etc/libvirt/auth.conf, or the file named by LIBVIRT_AUTH_FILE" in log
        assert "Failed to collect auth credentials" in log
        assert "connected to libvirt" not in log
    finally:
        daemon.stop()
        daemon.notify.close()
