"""The event table and per-domain opt-out, as the operator configures them: YAML filter
file (validated with file:line at start, on SIGHUP and by check-config), ignore rules."""
from __future__ import annotations

import signal
import subprocess

import pytest

from instancemonitor import event_filter, libvirt_constants
from tests.helpers import BIN, cli, wait_for
from tests.instancemonitor.conftest import vm_events


def test_default_table_is_masakari_monitors_plus_crashes():
    f = event_filter.default()
    for name in ("STOPPED_FAILED", "STOPPED_DESTROYED", "STOPPED_SHUTDOWN", "SHUTDOWN_FINISHED",
                 "SUSPENDED_IOERROR", "SUSPENDED_WATCHDOG", "SUSPENDED_API_ERROR",
                 "STOPPED_CRASHED", "CRASHED_PANICKED"):
        assert f.match("LIFECYCLE", name), name
    assert not f.match("LIFECYCLE", "SUSPENDED_PAUSED")
    assert not f.match("LIFECYCLE", "STARTED_BOOTED")
    assert f.match("IO_ERROR", "IO_ERROR_REPORT") and f.match("REBOOT", "UNKNOWN")
    assert f.match("WATCHDOG", "WATCHDOG_RESET") and not f.match("WATCHDOG", "WATCHDOG_INJECTNMI")
    # names built as masakari-monitors builds them
    assert libvirt_constants.vir_domain_event("LIFECYCLE", 5, 5) == "STOPPED_FAILED"
    assert libvirt_constants.vir_domain_event("IO_ERROR", 2, -1) == "IO_ERROR_REPORT"
    assert libvirt_constants.vir_domain_event("CONTROL_ERROR", -1, -1) == "UNKNOWN"
    assert libvirt_constants.vir_domain_event("LIFECYCLE", 42, 0) == "UNKNOWN_EVENT_42_0"


def test_extend_replace_and_drop():
    f = event_filter.parse("mode: extend\nevents:\n  LIFECYCLE: [SUSPENDED_PAUSED]\n"
                           "drop:\n  LIFECYCLE: [STOPPED_SHUTDOWN]\n")
    assert f.match("LIFECYCLE", "SUSPENDED_PAUSED") and f.match("LIFECYCLE", "STOPPED_FAILED")
    assert not f.match("LIFECYCLE", "STOPPED_SHUTDOWN")
    f = event_filter.parse("mode: replace\nevents:\n  LIFECYCLE: [STOPPED_FAILED]\n"
                           "  IO_ERROR: ['*']\n")
    assert f.match("IO_ERROR", "IO_ERROR_NONE") and not f.match("REBOOT", "UNKNOWN")
    assert not f.match("LIFECYCLE", "STOPPED_DESTROYED")
    f = event_filter.parse("events:\n  BLOCK_THRESHOLD: [UNKNOWN]\n")  # registered too
    assert "BLOCK_THRESHOLD" in f.event_ids() and f.match("BLOCK_THRESHOLD", "UNKNOWN")


def test_map_is_off_by_default_and_translates_only_what_it_names():
    assert event_filter.default().mapping == {}
    assert event_filter.default().translate("LIFECYCLE", "CRASHED_PANICKED") == (
        "LIFECYCLE", "CRASHED_PANICKED", None)
    f = event_filter.parse("map:\n  LIFECYCLE:\n    CRASHED_PANICKED: STOPPED_FAILED\n"
                           "  WATCHDOG:\n    WATCHDOG_RESET: LIFECYCLE/STOPPED_FAILED\n",
                           "/etc/f.yaml")
    assert f.translate("LIFECYCLE", "CRASHED_PANICKED") == (
        "LIFECYCLE", "STOPPED_FAILED", {"from": "LIFECYCLE/CRASHED_PANICKED",
                                        "to": "LIFECYCLE/STOPPED_FAILED",
                                        "rule": "/etc/f.yaml:3"})
    assert f.translate("WATCHDOG", "WATCHDOG_RESET")[:2] == ("LIFECYCLE", "STOPPED_FAILED")
    assert f.translate("LIFECYCLE", "STOPPED_CRASHED")[2] is None


@pytest.mark.parametrize("text,line,words", [
    ("mode: extend\nevents:\n  LIFECYCLE: [STOPPED_FAILD]\n", 3, "unknown vir_domain_event"),
    ("events:\n  LIFECYCLE: [STOPPED_FAILED]\n  BOGUS: [UNKNOWN]\n", 3, "unknown libvirt event ID"),
    ("events:\n  GRAPHICS: [UNKNOWN]\n", 2, "not supported"),
    ("mode: sometimes\n", 1, "mode must be"),
    ("events: [\n", 2, "invalid YAML"),
    ("mode: replace\nevents:\n  LIFECYCLE: STOPPED_FAILED\n", 3, "expected a list"),
    ("colour: red\n", 1, "unknown key"),
    ("map:\n  LIFECYCLE:\n    STARTED_BOOTED: STOPPED_FAILED\n", 3, "not let through"),
    ("map:\n  LIFECYCLE:\n    CRASHED_PANICKED: STOPPED_FAILD\n", 3, "map: target"),
    ("map:\n  LIFECYCLE:\n    CRASHED_PANICKD: STOPPED_FAILED\n", 3, "unknown vir_domain"),
    ("map:\n  BOGUS:\n    UNKNOWN: STOPPED_FAILED\n", 2, "unknown or unsupported"),
    ("map: [LIFECYCLE]\n", 1, "map: expected a mapping"),
])
def test_bad_filter_names_file_and_line(text, line, words):
    with pytest.raises(event_filter.FilterFileError) as err:
        event_filter.parse(text, "/etc/f.yaml")
    assert f"/etc/f.yaml:{line}: " in str(err.value) and words in str(err.value)


def test_bad_filter_file_refuses_start_and_check_config(tmp_path, make_daemon, host):
    bad = tmp_path / "filter.yaml"
    bad.write_text("events:\n  LIFECYCLE:\n    - STOPPED_FAILED\n    - NOPE\n")
    daemon = make_daemon(host, start=False, event_filter_file=bad)
    proc = subprocess.run([str(BIN / "ha-instancemonitor"), "--config-file", str(daemon.conf)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert f"{bad}:4: LIFECYCLE: unknown vir_domain_event 'NOPE'" in proc.stderr
    result = cli(daemon.conf, "check-config")
    assert result.returncode == 1 and f"{bad}:4:" in result.stderr


def test_sighup_reload_extends_filter_and_keeps_old_on_error(libvirtd, make_daemon,
                                                             masakari_api, host, tmp_path):
    filt = tmp_path / "filter.yaml"
    filt.write_text("mode: extend\n")
    d1, d2, d3 = (libvirtd.create(f"inst-{i}") for i in range(3))
    daemon = make_daemon(host, event_filter_file=filt)
    d1.suspend()  # SUSPENDED_PAUSED: not in the default table
    filt.write_text("mode: extend\nevents:\n  LIFECYCLE: [SUSPENDED_PAUSED]\n")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "reload: event filter from" in daemon.log_text(), 5, what="reload")
    d2.suspend()
    wait_for(lambda: vm_events(masakari_api, host), 10, what="SUSPENDED_PAUSED stored")
    filt.write_text("mode: extend\nevents:\n  LIFECYCLE: [SUSPENDED_PAUSE]\n")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "new configuration rejected" in daemon.log_text(), 5, what="rejection")
    assert f"{filt}:3:" in daemon.log_text()
    d3.suspend()  # the old (extended) table is still in force
    events = wait_for(lambda: (lambda e: e if len(e) >= 2 else None)(
        vm_events(masakari_api, host)), 10, what="second SUSPENDED_PAUSED")
    assert {u for _, u, _ in events} == {d2.UUIDString(), d3.UUIDString()}
    assert all(v == "SUSPENDED_PAUSED" for *_, v in events)


def test_ignored_domains_by_name_and_metadata(libvirtd, make_daemon, masakari_api, host):
    nova = libvirtd.create("instance-0001")
    plain = libvirtd.create("helper-vm", nova=False)
    scratch = libvirtd.create("scratch-1")
    daemon = make_daemon(host, only_nova_domains="true", ignore_domains="^scratch-,^tmp")
    late_plain = libvirtd.create("late-helper", nova=False)  # not cached: looked up
    for dom in (plain, scratch, late_plain, nova):
        dom.destroy()
    wait_for(lambda: vm_events(masakari_api, host), 10, what="nova domain's event")
    wait_for(lambda: daemon.log_text().count("ignored:") >= 3, 5, what="3 ignored lines")
    assert vm_events(masakari_api, host) == [("LIFECYCLE", nova.UUIDString(),
                                              "STOPPED_DESTROYED")]
    log = daemon.log_text()
    assert "name matches ignore_domains '^scratch-'" in log
    assert "only_nova_domains" in log
