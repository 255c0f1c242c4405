"""The process list: masakari-monitors' files load unchanged; bad input names file:line."""
from __future__ import annotations

import pytest

from processmonitor.process_list import ProcessListError, load
from processmonitor.watcher import is_own, parse_proc_events
from tests.helpers import cli, write_conf

MM_LIST = """\
# as shipped in masakari-monitors' etc/masakarimonitors/process_list.yaml.sample
-
    # libvirt-bin
    process_name: /usr/sbin/libvirtd
    start_command: systemctl start libvirt-bin
    pre_start_command:
    post_start_command:
    restart_command: systemctl restart libvirt-bin
    pre_restart_command:
    post_restart_command:
    run_as_root: True
-
    # nova-compute
    process_name: /usr/local/bin/nova-compute
    start_command: systemctl start nova-compute
    pre_start_command:
    post_start_command:
    restart_command: systemctl restart nova-compute
    pre_restart_command:
    post_restart_command:
    run_as_root: True
"""


def test_masakari_monitors_file_loads_unchanged(tmp_path):
    path = tmp_path / "process_list.yaml"
    path.write_text(MM_LIST)
    plist = load(str(path))
    assert plist.errors == []
    assert [e.process_name for e in plist.entries] == ["/usr/sbin/libvirtd",
                                                       "/usr/local/bin/nova-compute"]
    libvirtd = plist.entries[0]
    assert libvirtd.line == 4
    assert libvirtd.command("restart_command") == ["systemctl", "restart", "libvirt-bin"]
    assert libvirtd.command("pre_restart_command") is None  # YAML null = no command
    assert libvirtd.run_as_root is True
    assert libvirtd.payload_name == "libvirtd"  # what masakari-monitors sends (basename)


def test_bad_entries_name_file_line_and_entry_and_spare_the_others(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("""\
- process_name: good-one
  restart_command: /bin/true
  restrat_interval: 3
- start_command: /bin/true
- process_name: bad-match
  match: fuzzy
- process_name: "bad-regex ("
  match: regex
- process_name: quoting
  restart_command: "sh -c 'unbalanced"
- process_name: retries
  restart_retries: -1
- process_name: good-two
  restart_command: /no/such/program --flag
  notify_name: nova-compute
""")
    plist = load(str(path))
    assert [e.process_name for e in plist.entries] == ["good-one", "good-two"]
    errors = "\n".join(plist.errors)
    assert f"{path}:4: entry 2: process_name is required" in errors
    assert f"{path}:6: entry 3 ('bad-match'): match: 'fuzzy' is not one of" in errors
    assert f"{path}:7: entry 4 ('bad-regex ('): process_name: not a valid regular" in errors
    assert f"{path}:10: entry 5 ('quoting'): restart_command: cannot split" in errors
    assert f"{path}:12: entry 6 ('retries'): restart_retries: expected an integer" in errors
    warnings = "\n".join(plist.warnings)
    assert f"{path}:3: entry 1 ('good-one'): restrat_interval: unknown key" in warnings
    assert f"{path}:14: entry 7 ('good-two'): restart_command: '/no/such/program' is not " \
           "an executable" in warnings
    assert plist.entries[1].payload_name == "nova-compute"


def test_two_entries_reporting_the_same_name_are_warned_about(tmp_path):
    """Masakari and the verdict file know a process by the name it reports: two entries
    reporting one name would hide each other's failure."""
    path = tmp_path / "list.yaml"
    path.write_text("- process_name: /usr/bin/nova-compute\n"
                    "- process_name: /opt/venv/bin/nova-compute\n"
                    "- process_name: /opt/venv/bin/libvirtd\n"
                    "  notify_name: compute-agent\n"
                    "- process_name: compute-agent\n")
    plist = load(str(path))
    assert len(plist.entries) == 4 and plist.errors == []   # kept: compatible files load
    assert plist.warnings == [
        f"{path}:2: entry 2 ('/opt/venv/bin/nova-compute') reports as 'nova-compute', as the "
        "entry at line 1 does: Masakari, the history and hostmonitor's compute column "
        "cannot tell the two apart (one's 'running' hides the other's failure); give one "
        "a notify_name",
        f"{path}:5: entry 4 ('compute-agent') reports as 'compute-agent', as the entry at "
        "line 3 does: Masakari, the history and hostmonitor's compute column cannot tell "
        "the two apart (one's 'running' hides the other's failure); give one a notify_name"]


@pytest.mark.parametrize("text, message", [
    ("- process_name: a\n  start_command: [unclosed\n", ":3: not valid YAML"),
    ("process_name: a\n", ":1: expected a YAML list of processes, got dict"),
])
def test_unusable_file_is_an_error_naming_the_line(tmp_path, text, message):
    path = tmp_path / "list.yaml"
    path.write_text(text)
    with pytest.raises(ProcessListError, match=message):
        load(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(ProcessListError, match="cannot read the process list"):
        load(str(tmp_path / "nope.yaml"))


def test_match_modes(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- {process_name: nova-comp}\n"
                    "- {process_name: nova-compute, match: exact, notify_name: x}\n"
                    "- {process_name: '^/usr/bin/python3 .*/nova-compute$', match: regex}\n")
    sub, exact, regex = load(str(path)).entries
    argv = ["/usr/bin/python3", "/usr/bin/nova-compute"]
    assert sub.matches(argv) and regex.matches(argv)
    assert not exact.matches(argv)
    assert exact.matches(["/usr/bin/nova-compute", "--config-file", "x"])
    assert exact.matches(argv, comm="nova-compute")
    assert sub.matches(["nova-compute-helper"])  # a substring, as masakari-monitors does


def test_check_config_reports_the_list(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- restart_command: /bin/true\n")
    conf = write_conf(tmp_path / "m.conf", hostname="h1", state_path=tmp_path, endpoint=None,
                      sections={"process": {"process_list_path": path}})
    out = cli(conf, "check-config")
    assert out.returncode == 1
    assert f"error: {path}:1: entry 1: process_name is required" in out.stderr
    # a warning (an unknown key, e.g. a typo) is shown but does not fail the configuration
    path.write_text("- process_name: nova-compute\n  restart_command: /bin/true\n"
                    "  restrat_interval: 3\n")
    out = cli(conf, "check-config")
    assert out.returncode == 0, out.stderr
    assert f"warning: {path}:3: entry 1 ('nova-compute'): restrat_interval: unknown key" \
        in out.stderr and "error:" not in out.stderr


def test_own_pid_is_own():
    import os
    assert is_own(os.getpid())
    assert not is_own(1)


def test_parse_proc_events_ignores_threads():
    import struct
    def msg(what, data):
        ev = struct.pack("=IIQ", what, 0, 0) + data
        cn = struct.pack("=IIIIHH", 1, 1, 0, 0, len(ev), 0)
        return struct.pack("=IHHII", 16 + len(cn) + len(ev), 3, 0, 0, 0) + cn + ev
    data = (msg(2, struct.pack("=ii", 10, 10)) + msg(1, struct.pack("=iiii", 10, 10, 11, 11))
            + msg(1, struct.pack("=iiii", 10, 10, 12, 10)))
    assert list(parse_proc_events(data)) == [(2, 10, None), (1, 11, 10)]
