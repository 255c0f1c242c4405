"""`ha-monitors notify` (what Pacemaker's alert agent runs for every alert) stays light: it
puts one row and imports none of what delivery needs. A behavioural guard on what the real
command imports (its speed is measured in bench/bench_notify_start.py, not here), and proof
that what is deferred still works when used."""
import json
import subprocess
import sys

from monitors.history import ReadModel
from tests.helpers import BIN, write_conf

# Modules the notify path must not import: keystoneauth/openstacksdk/requests are for
# delivery, oslo.log and oslo.service for the daemons, stevedore/importlib.metadata for
# plugin scans, netaddr/rfc3986 for option types notify never reads.
HEAVY = ("keystoneauth1", "openstack", "requests", "oslo_log.log", "oslo_service",
         "stevedore", "importlib.metadata", "netaddr", "rfc3986", "prometheus_client",
         "libvirt", "pyroute2", "psutil")


def imported(argv: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run the console script with -X importtime; the modules it imported."""
    r = subprocess.run([sys.executable, "-X", "importtime", str(BIN / "ha-monitors"), *argv],
                       capture_output=True, text=True, timeout=60)
    names = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines()
             if line.startswith("import time:")}
    return r, names


def test_notify_puts_the_row_without_importing_delivery_or_daemon_modules(tmp_path):
    conf = write_conf(tmp_path / "m.conf", hostname="cmp-1", state_path=tmp_path / "state",
                      endpoint=None, sections={"nova": {"force_down": "true"}})
    payload = {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "NORMAL"}
    r, names = imported(["--config-file", str(conf), "notify", "--type", "COMPUTE_HOST",
                         "--hostname", "cmp-2", "--payload", json.dumps(payload),
                         "--source", "hostmonitor/pacemaker-alert"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout == "notification 1 queued\n"
    assert "monitors.outbox" in names  # the measurement itself works
    assert sorted(h for h in HEAVY if h in names) == []
    # ...and the row is what it always was: routed (force-down first), durable.
    from monitors.outbox import Outbox

    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    try:
        row = ReadModel(box).get(1)
    finally:
        box.close()
    assert row["notification"]["payload"] == payload
    assert row["source"] == "hostmonitor/pacemaker-alert"
    assert [(d["driver"], d["stage"]) for d in row["deliveries"]] == [
        ("nova-force-down", 0), ("masakari", 1)]


def test_a_bad_value_is_refused_by_notify_as_before(tmp_path):
    """Options are still read through oslo.config: a bad value notify reads is the same
    one-line error."""
    conf = write_conf(tmp_path / "m.conf", hostname="cmp-1", state_path=tmp_path / "state",
                      endpoint=None, sections={"nova": {"force_down": "perhaps"}})
    r = subprocess.run([str(BIN / "ha-monitors"), "--config-file", str(conf), "notify",
                        "--type", "COMPUTE_HOST", "--payload",
                        json.dumps({"event": "STOPPED", "cluster_status": "OFFLINE",
                                    "host_status": "NORMAL"})],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("ha-monitors: configuration error: ")
    assert "force_down" in r.stderr and "perhaps" in r.stderr


def test_what_oslo_config_defers_is_imported_when_used():
    """stevedore, netaddr and rfc3986 are imported by oslo.config up front; monitors.config
    defers them until used, and then they work as ever. keystoneauth is imported only
    where its options are registered. (A fresh interpreter: option groups registered
    by other tests in this one would show through.)"""
    code = """if True:
        import sys
        from monitors import config
        assert not {"stevedore", "netaddr", "rfc3986"} & set(sys.modules), sys.modules.keys()
        assert "keystoneauth1" not in sys.modules
        ip, uri = config.types.IPAddress(), config.types.URI()
        assert ip("192.0.2.1") == "192.0.2.1"
        for bad, check in (("192.0.2.300", ip), ("not a uri", uri)):
            try:
                check(bad)
            except ValueError:
                pass
            else:
                raise AssertionError(bad)
        assert uri("http://h:1/x") == "http://h:1/x"
        core = config.new_conf(auth=False)  # what notify without --wait reads
        core([], project="x", default_config_files=[])
        assert core.delivery.drivers == ["masakari"] and core.nova.force_down is False
        assert "auth_type" not in core.api and "keystoneauth1" not in sys.modules
        import stevedore, netaddr, rfc3986  # the real modules now, for everyone
        assert isinstance(stevedore.ExtensionManager, type)
        assert not isinstance(netaddr, config._Deferred)
        conf = config.new_conf()  # with keystoneauth's options, as the daemons load it
        conf([], project="x", default_config_files=[])
        assert conf.api.auth_type == "password" and conf.nova.service_type == "compute"
        print("ok")
    """
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.stdout == "ok\n", r.stderr[-2000:]

