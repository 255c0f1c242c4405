"""Kernel-log and hardware faults, from the real kernel where it can produce them
(tests/hostmonitor/kernel_faults.py says which), to what the real masakari-api stored or
the operator's webhook received, with the kernel line in the decision."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.fixtures.journald import journald  # noqa: F401 - the fixture
from tests.helpers import Daemon, cli, wait_for, write_conf
from tests.hostmonitor import kernel_faults as kf
from tests.hostmonitor.test_links import STARTED, STOPPED

from hostmonitor import hardware, kmsg, kmsg_rules, matrix


# -- rules files ------------------------------------------------------------------------------
def test_shipped_rules_match_the_lines_this_kernel_writes():
    rules = kmsg_rules.shipped()
    cases = {  # lines captured from this kernel (6.18), and documented formats for the rest
        "Memory cgroup out of memory: Killed process 11096 (qemu-system-x86) total-vm:76780kB,"
        " anon-rss:65280kB, file-rss:5444kB": ("oom-kill", {"pid": "11096",
                                                            "comm": "qemu-system-x86"}),
        "qemu-system-x86 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0":
            ("oom-invoked", {"comm": "qemu-system-x86"}),
        "EXT4-fs error (device loop3): trigger_test_error:6279: comm bash: trigger_test_error":
            ("ext4-error", {"device": "loop3"}),
        "EXT4-fs (loop3): Remounting filesystem read-only": ("ext4-remount-ro",
                                                             {"device": "loop3"}),
        "INFO: task bash:1234 blocked for more than 12 seconds.":
            ("hung-task", {"comm": "bash", "pid": "1234"}),
        "mce: [Hardware Error]: Machine check events logged": ("mce", {}),
        "EDAC MC0: 1 UE memory read error on CPU_SrcID#0_Ha#0_Chan#0_DIMM#0": ("edac", {}),
        "NETDEV WATCHDOG: eth0 (e1000e): transmit queue 0 timed out 5016 ms":
            ("nic-watchdog", {"iface": "eth0"}),
        "BUG: unable to handle page fault for address: ffffffffc0000000": ("kernel-oops", {}),
    }
    for line, (name, groups) in cases.items():
        rule, got = rules.match(line)
        assert (rule.name, got) == (name, groups), line
    assert rules.match("EXT4-fs (loop3): mounted filesystem with ordered data mode") is None


@pytest.mark.parametrize("text,line,message", [
    ("rules:\n  - name: a\n    match: 'x('\n    finding: kernel_oops\n", 3,
     "a: invalid regular expression"),
    ("rules:\n  - name: a\n    match: 'x'\n    finding: meltdown\n", 4,
     "a: unknown finding 'meltdown'"),
    ("rules:\n  - name: a\n    match: 'EXT4 (.*)'\n    finding: storage_error\n", 3,
     "finding storage_error needs the named group(s) (?P<device>...)"),
    ("rules:\n  - name: a\n    match: 'x'\n    finding: hung_task\n", 3, "needs"),
    ("disable: [no-such-rule]\n", 1, "disable: no shipped rule 'no-such-rule'"),
    ("rules:\n  - name: a\n    match: 'x'\n    finding: kernel_oops\n    colour: red\n", 5,
     "unknown key 'colour'"),
    ("rules:\n  - name: a\n    match: 'x(?P<pid>1)'\n    finding: hung_task\n    hold: 5\n",
     5, "held by a live check"),
    ("rules:\n  - {name: a, match: x, finding: kernel_oops, hold: soon}\n", 2,
     "expected seconds or 'boot'"),
    ("mode: replace\n", 1, "mode: replace needs a non-empty 'rules'"),
    ("rules: [\n", 2, "invalid YAML"),
])
def test_rules_file_errors_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "kernel.yaml"
    path.write_text(text)
    with pytest.raises(kmsg_rules.RulesError) as exc:
        kmsg_rules.load(str(path))
    assert str(exc.value).startswith(f"{path}:{line}: "), exc.value
    assert message in str(exc.value)


def test_bad_rules_file_stops_the_daemon_and_check_config_with_file_and_line(tmp_path):
    from tests.helpers import BIN

    path = tmp_path / "kernel.yaml"
    path.write_text("rules:\n  - name: a\n    match: 'x'\n    finding: meltdown\n")
    conf = write_conf(tmp_path / "hm.conf", hostname="x", state_path=tmp_path, endpoint=None,
                      sections={"hostmonitor": {"storage_paths": str(tmp_path),
                                                "kernel_rules_file": str(path)}})
    out = subprocess.run([str(BIN / "ha-hostmonitor"), "--config-file", str(conf)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert f"{path}:4: a: unknown finding 'meltdown'" in out.stderr
    out = cli(conf, "check-config")
    assert out.returncode != 0
    assert f"{path}:4: a: unknown finding 'meltdown'" in out.stdout + out.stderr


def test_operator_file_extends_replaces_and_disables(tmp_path):
    path = tmp_path / "kernel.yaml"
    path.write_text("disable: [nic-reset, nic-watchdog]\nrules:\n"
                    "  - name: kernel-oops\n    match: '^Oops: '\n    finding: kernel_oops\n"
                    "    hold: 60\n"
                    "  - name: raid\n    match: 'md/raid1:(?P<device>md\\d+): Disk failure'\n"
                    "    finding: storage_error\n")
    rules = kmsg_rules.load(str(path))
    names = [r.name for r in rules.rules]
    assert "nic-reset" not in names and names[-1] == "raid"
    assert rules.match("BUG: x") is None  # the operator's kernel-oops replaced the shipped
    rule, groups = rules.match("md/raid1:md0: Disk failure on sdb1")
    assert (rule.name, groups, rule.hold) == ("raid", {"device": "md0"}, 600.0)
    assert rules.match("Oops: 0002")[0].hold == 60.0


# -- the reader -------------------------------------------------------------------------------
def test_kmsg_resumes_after_restart_nothing_twice_nothing_missed(tmp_path):
    state = str(tmp_path / "kmsg.json")
    marker = f"ha-kmsg-test-{kf.tag()}"
    first = kmsg.KmsgReader("/dev/kmsg", state)
    first.open()
    assert "first start" in first.started_from
    kf.inject(f"{marker} before-1")
    kf.inject(f"{marker} before-2")
    wait_for(lambda: first.wait(0.1), 5, what="kmsg readable")
    got = [r.text for r in first.read_available() if marker in r.text]
    assert got == [f"{marker} before-1", f"{marker} before-2"]
    first.commit()
    first.close()
    # the daemon is down: the kernel goes on logging
    kf.inject(f"{marker} while-down-1")
    kf.inject(f"{marker} while-down-2")
    second = kmsg.KmsgReader("/dev/kmsg", state)
    second.open()
    assert "resumed" in second.started_from
    kf.inject(f"{marker} after")
    texts = []
    wait_for(lambda: texts.extend(r.text for r in second.read_available()
                                  if marker in r.text) or len(texts) >= 3, 5,
             what="records after the restart")
    assert texts == [f"{marker} while-down-1", f"{marker} while-down-2", f"{marker} after"]
    second.close()


def test_kmsg_counts_records_overwritten_under_the_reader(tmp_path):
    # The kernel cannot be made to overwrite on demand; the reader's own read(2) is fed
    # the sequence /dev/kmsg gives then: records, EPIPE, then the oldest one still there.
    import errno

    class Feed(kmsg.KmsgReader):
        items = [b"6,10,1,-;a\n", b"6,11,2,-;b\n", OSError(errno.EPIPE, "overwritten"),
                 b"6,15,3,-;c\n", BlockingIOError()]

        def _read_raw(self):
            item = self.items.pop(0)
            if isinstance(item, BaseException):
                raise item
            return item

    reader = Feed("/dev/null", str(tmp_path / "s.json"))
    assert [r.seq for r in reader.read_available()] == [10, 11, 15]
    assert reader.lost == 3


# -- hardware ---------------------------------------------------------------------------------
def _conf(tmp_path, **hm):
    from monitors import config
    from hostmonitor import opts
    conf = config.new_conf()
    config.register_opts(conf)
    opts.register_opts(conf)
    conf([], project="test", default_config_files=[])
    for k, v in hm.items():
        conf.set_override(k, v, "hostmonitor")
    return conf


def test_hardware_thresholds_from_sysfs_and_rasdaemon(tmp_path):
    # No EDAC or hwmon here: the kernel's sysfs layout is reproduced in a directory.
    mc = tmp_path / "devices/system/edac/mc/mc0"
    mc.mkdir(parents=True)
    (mc / "ce_count").write_text("5\n")
    (mc / "ue_count").write_text("0\n")
    chip = tmp_path / "class/hwmon/hwmon0"
    chip.mkdir(parents=True)
    (chip / "name").write_text("nct6775\n")
    (chip / "fan1_alarm").write_text("0\n")
    conf = _conf(tmp_path, sysfs_root=str(tmp_path), hardware_ce_threshold=10,
                 hardware_rasdaemon_db=str(tmp_path / "ras.db"))
    assert hardware.HardwareChecks(conf).run() == ("up", [])
    (mc / "ce_count").write_text("12\n")
    (chip / "fan1_alarm").write_text("1\n")
    (chip / "fan1_label").write_text("CPU fan\n")
    state, findings = hardware.HardwareChecks(conf).run()
    assert state == "degraded"
    assert [f.detail for f in findings] == [
        "mc0: 12 corrected memory error(s) (threshold 10)",
        "nct6775 fan1_alarm (CPU fan) = 1"]
    (mc / "ce_count").write_text("0\n")
    (chip / "fan1_alarm").write_text("0\n")
    db = sqlite3.connect(tmp_path / "ras.db")  # rasdaemon's tables (columns it writes)
    db.execute("CREATE TABLE mc_event (id INTEGER PRIMARY KEY, timestamp TEXT, err_count "
               "INTEGER, err_type TEXT, err_msg TEXT, label TEXT)")
    db.execute("CREATE TABLE mce_record (id INTEGER PRIMARY KEY, timestamp TEXT)")
    db.execute("INSERT INTO mc_event (err_count, err_type) VALUES (1, 'Uncorrected')")
    db.commit()
    db.close()
    state, findings = hardware.HardwareChecks(conf).run()
    assert (state, [f.detail for f in findings]) == (
        "degraded", ["1 uncorrected memory error(s) recorded"])


def test_degraded_host_row_notifies_and_drains_but_never_reports():
    base = {"management": "up", "tenant": "up", "storage": "up", "compute": "up"}
    for profile in ("cattle", "pets"):
        m = matrix.Matrix(None, profile)
        assert m.lookup({**base, "host_health": "degraded"})[0] == ("notify_operator", "drain")
        assert m.lookup({**base, "host_health": "up"})[0] == ()
        assert m.lookup({**base, "storage": "down", "host_health": "degraded"})[0] == (
            "report_host_failure",)


# -- the daemon, with real faults -------------------------------------------------------------
def start(tmp_path, endpoint, host, sections=None, argv_prefix=(), **hm):
    # Undamped (the shipped hold_down of 30 s is for production): these tests time the
    # kernel path, not the damping.
    opts = {"storage_paths": str(tmp_path), "compute_processes": "", "hold_down": 0,
            "evaluation_interval": 0.3, "storage_check_interval": 0.5,
            "kernel_qemu_scan_interval": 0.5, "hardware_check_interval": 0, **hm}
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    conf = write_conf(tmp_path / "hm.conf", hostname=host, state_path=state,
                      endpoint=endpoint, sections={"hostmonitor": opts,
                                                   "host": {"monitoring_samples": 1},
                                                   **(sections or {})})
    return Daemon("hostmonitor", conf, argv_prefix=list(argv_prefix)).start()


def stored(api, host, type_):
    return [json.loads(n["payload"]) if isinstance(n["payload"], str) else n["payload"]
            for n in api.notifications(type=type_, hostname=host)]


def wait_stored(api, host, type_, expected, timeout=20):
    def ok():
        return stored(api, host, type_) == expected
    try:
        wait_for(ok, timeout, interval=0.2, what=f"API to store {expected}")
    except AssertionError:
        raise AssertionError(f"API has {stored(api, host, type_)}, expected {expected}")
    # ... and each POSTed once (a re-send is answered 409 and not stored)
    time.sleep(0.5)  # a re-send of the last one would have followed by now
    assert [(p.payload, p.status) for p in api.posts(type=type_, hostname=host)] == \
        [(p, 202) for p in expected], "each POSTed once"


def outbox_json(conf, type_):
    out = cli(conf, "outbox", "list", "--json", "--type", type_)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_oom_killed_qemu_becomes_a_vm_notification(tmp_path, masakari_api, host):
    d = start(tmp_path, masakari_api.endpoint, host)  # scans qemu processes every 0.5 s
    try:
        with kf.memory_cgroup(48) as cg:
            proc, instance = kf.start_qemu(tmp_path, cg)
            time.sleep(1.0)  # a VM runs a while before it grows past its limit
            kf.oom(proc)
            wait_stored(masakari_api, host, "VM", [{
                "event": "LIFECYCLE", "instance_uuid": instance,
                "vir_domain_event": "STOPPED_FAILED"}])
        log = d.log_text()
        assert f"OOM killer killed qemu pid {proc.pid} of instance {instance}" in log
        assert f"Killed process {proc.pid} (qemu-system-x86)" in log
        assert stored(masakari_api, host, "COMPUTE_HOST") == []  # a VM fault, not a host one
        text = outbox_json(d.conf, "VM")  # the decision: the kernel line, rule, where from
        assert f"Killed process {proc.pid} (qemu-system-x86)" in text
        assert '"instance_uuid_from": "command line' in text  # read now, or captured before
        assert "kmsg_rules.yaml" in text
    finally:
        assert d.stop() == 0


def test_oom_kill_of_another_process_is_logged_only(tmp_path, masakari_api, host):
    d = start(tmp_path, masakari_api.endpoint, host)
    try:
        with kf.memory_cgroup(48) as cg:
            proc = subprocess.Popen(["python3", "-c", "a=[]\nwhile True: "
                                     "a.append(bytearray(1<<20))"],
                                    preexec_fn=lambda: (cg / "cgroup.procs").write_text(
                                        f"{os.getpid()}\n"))
            proc.wait(30)
        wait_for(lambda: f"killed python3 (pid {proc.pid}), not a qemu process" in
                 d.log_text(), 10, what="log line")
        assert stored(masakari_api, host, "VM") == []
    finally:
        d.stop()


def test_ext4_read_only_remount_of_instance_storage_is_storage_down(tmp_path, masakari_api,
                                                                    host):
    with kf.ext4_on_loop(tmp_path) as (mnt, dev):
        d = start(tmp_path, masakari_api.endpoint, host, storage_paths=str(mnt))
        try:
            time.sleep(1.0)
            assert stored(masakari_api, host, "COMPUTE_HOST") == []
            kf.trigger_fs_error(dev)
            wait_stored(masakari_api, host, "COMPUTE_HOST", [STOPPED])
            with open("/proc/mounts") as f:  # what the decision had to see through
                opts = next(line.split()[3] for line in f if line.split()[1] == str(mnt))
            assert opts.startswith("rw") and "emergency_ro" in opts
            log = d.log_text()
            name = os.path.basename(dev)
            assert f"storage_readonly on instance storage {mnt} ({name})" in log
            assert f"EXT4-fs ({name}): Remounting filesystem read-only" in log
            # The decision holds what was seen at that moment: the kernel's lines (usually
            # the error, which comes first), or the mount's `emergency_ro` when an
            # evaluation read /proc/self/mountinfo before the reader got the lines.
            text = outbox_json(d.conf, "COMPUTE_HOST")
            assert '"storage_kernel"' in text
            assert f"EXT4-fs error (device {name})" in text or "emergency_ro" in text
        finally:
            d.stop()


def test_ext4_error_on_other_device_is_logged_only(tmp_path, masakari_api, host):
    with kf.ext4_on_loop(tmp_path) as (mnt, dev):
        d = start(tmp_path, masakari_api.endpoint, host)  # storage_paths: not this mount
        try:
            kf.trigger_fs_error(dev)
            wait_for(lambda: "is not on the instance storage" in d.log_text(), 10,
                     what="log line")
            time.sleep(1.0)
            assert stored(masakari_api, host, "COMPUTE_HOST") == []
        finally:
            d.stop()


@pytest.mark.slow
def test_hung_task_on_instance_storage_is_storage_down(tmp_path, masakari_api, host):
    with kf.frozen_fuse_ext4(tmp_path) as (mnt, dev, freeze, thaw), \
            kf.sysctl("kernel/hung_task_timeout_secs", "3"), \
            kf.sysctl("kernel/hung_task_warnings", "-1"):
        d = start(tmp_path, masakari_api.endpoint, host, storage_paths=str(mnt))
        writer = None
        try:
            freeze()
            writer = subprocess.Popen(["dd", "if=/dev/zero", f"of={mnt}/disk.img", "bs=1M",
                                       "count=8", "oflag=direct"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_stored(masakari_api, host, "COMPUTE_HOST", [STOPPED], timeout=40)
            assert f"hung_task on instance storage {mnt} (dd:{writer.pid})" in d.log_text()
            thaw()  # the task finishes: the condition clears, the host recovers
            writer.wait(30)
            wait_stored(masakari_api, host, "COMPUTE_HOST", [STOPPED, STARTED], timeout=30)
            assert "the task is no longer blocked" in d.log_text()
        finally:
            thaw()
            if writer:
                writer.wait(30)
            d.stop()


@pytest.fixture
def receiver():
    got: list = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    server.shutdown()


@pytest.mark.parametrize("line", [
    "mce: [Hardware Error]: CPU 0: Machine Check: 0 Bank 4: be00000000800400",
    "EDAC MC0: 1 UE memory read error on CPU_SrcID#0_Ha#0_Chan#0_DIMM#0 (test)",
])
def test_machine_check_degrades_host_notify_and_drain_never_masakari(tmp_path, masakari_api,
                                                                     host, receiver, line):
    url, got = receiver
    rules = tmp_path / "kernel.yaml"  # a short hold so the recovery is seen in the test
    rules.write_text("rules:\n  - {name: mce, match: '^mce: \\[Hardware Error\\]:', "
                     "finding: hardware_error, hold: 3}\n"
                     "  - {name: edac, match: '^EDAC (?:MC\\d+|\\S+): \\d+ (?:CE|UE) ', "
                     "finding: hardware_error, hold: 3}\n")
    d = start(tmp_path, masakari_api.endpoint, host, kernel_rules_file=str(rules),
              operator_driver="webhook", drain_driver="webhook",
              sections={"delivery": {"drivers": "masakari,webhook"}, "webhook": {"url": url}})
    try:
        kf.inject(f"{line} {kf.tag()}")
        for _ in range(20):  # a storm: still one notification
            kf.inject(line)
        wait_for(lambda: len(got) >= 2, 15, what="operator notice and drain")
        assert {g["payload"]["hostname"] for g in got} == {host}
        payloads = [g["payload"]["payload"] for g in got]
        assert sorted(payloads[:2], key=len) == [
            {"event": "STOPPED", "host_status": "UNKNOWN"},  # drain: stop scheduling here
            {"event": "STOPPED", "cluster_status": "ONLINE", "host_status": "UNKNOWN"}]
        wait_for(lambda: len(got) >= 4, 20, what="recovery after the hold")
        payloads = [g["payload"]["payload"] for g in got]
        assert sorted(payloads[2:], key=len) == [
            {"event": "STARTED", "host_status": "UNKNOWN"},  # drain released
            {"event": "STARTED", "cluster_status": "ONLINE", "host_status": "NORMAL"}]
        time.sleep(1.0)
        assert len(got) == 4  # the storm of 21 lines: one finding
        assert stored(masakari_api, host, "COMPUTE_HOST") == []  # Masakari never acts on it
        log = d.log_text()
        assert "host health degraded" in log and line in log
    finally:
        d.stop()


def test_a_storm_is_one_condition_and_a_new_occurrence_after_it_cleared_is_new(tmp_path):
    from hostmonitor.kernel import KernelWatcher

    conf = _conf(tmp_path, hardware_check_interval=0)
    conf.set_override("state_path", str(tmp_path))
    wakes = []
    w = KernelWatcher(conf, lambda: wakes.append(1))
    line = "NETDEV WATCHDOG: eth0 (e1000e): transmit queue 0 timed out 5016 ms"
    for seq in range(1, 1001):
        w.handle(kmsg.Record(seq, 4, 0, seq, line))
    state, evidence = w.health()
    assert state == "degraded" and len(evidence) == 1
    assert evidence[0]["records"] == 1000 and evidence[0]["seq"] == 1
    assert evidence[0]["kernel_line"].endswith(line) and len(wakes) == 1
    next(iter(w.conditions.values())).until = 0.0  # its hold (600 s) is over
    assert w.health() == ("up", [])
    w.handle(kmsg.Record(2000, 4, 0, 2000, line))  # within dedup, but the old one cleared
    state, evidence = w.health()
    assert state == "degraded" and evidence[0]["seq"] == 2000


def test_daemon_restart_reads_what_the_kernel_logged_while_it_was_down_once(
        tmp_path, masakari_api, host, receiver):
    url, got = receiver
    rules = tmp_path / "kernel.yaml"
    rules.write_text("mode: replace\nrules:\n  - {name: mce, match: '^mce: \\[Hardware "
                     "Error\\]: (?P<iface>test-\\S+)', finding: nic_reset, hold: 1}\n")
    kw = dict(kernel_rules_file=str(rules), operator_driver="webhook",
              sections={"delivery": {"drivers": "masakari,webhook"}, "webhook": {"url": url}})
    marker = kf.tag()
    d = start(tmp_path, masakari_api.endpoint, host, **kw)
    try:
        kf.inject(f"mce: [Hardware Error]: test-{marker}-a")
        wait_for(lambda: len(got) >= 2, 15, what="notice and recovery")  # hold: 1 s
    finally:
        assert d.stop() == 0
    kf.inject(f"mce: [Hardware Error]: test-{marker}-b")  # while the daemon is down
    d = start(tmp_path, masakari_api.endpoint, host, **kw)
    try:
        wait_for(lambda: len(got) >= 4, 15, what="the record logged while down")
        time.sleep(2.0)
        assert [g["payload"]["payload"]["event"] for g in got] == [
            "STOPPED", "STARTED", "STOPPED", "STARTED"]  # -a was not read a second time
        log = d.log_text()
        assert "(resumed)" in log and f"test-{marker}-b" in log
        assert f"test-{marker}-a" not in log.split("(resumed)")[-1]
    finally:
        d.stop()


def test_held_findings_survive_a_daemon_restart_not_a_reboot(tmp_path):
    from hostmonitor.kernel import KernelWatcher

    conf = _conf(tmp_path, hardware_check_interval=0)
    conf.set_override("state_path", str(tmp_path))
    first = KernelWatcher(conf, lambda: None)
    first.handle(kmsg.Record(7, 0, 0, 7, "BUG: kernel NULL pointer dereference, address: 0"))
    assert first.health()[0] == "degraded"
    again = KernelWatcher(conf, lambda: None)  # the daemon restarted: the line is not re-read
    again._load_conditions()
    state, evidence = again.health()
    assert state == "degraded" and evidence[0]["finding"] == "kernel_oops"
    doc = json.loads((tmp_path / "hostmonitor-kernel.json").read_text())
    doc["boot_id"] = "another-boot"
    (tmp_path / "hostmonitor-kernel.json").write_text(json.dumps(doc))
    rebooted = KernelWatcher(conf, lambda: None)
    rebooted._load_conditions()
    assert rebooted.health() == ("up", [])


def test_matrix_file_names_the_degraded_host_row(tmp_path):
    path = tmp_path / "matrix.yaml"
    path.write_text("matrix:\n  - {storage: down, actions: [report_host_failure]}\n"
                    "  - {host_health: degraded, actions: [drain]}\n  - {actions: [none]}\n")
    m = matrix.load(str(path))
    base = {"management": "up", "tenant": "up", "storage": "up", "compute": "up"}
    assert m.lookup({**base, "host_health": "degraded"}) == (("drain",), f"{path}:3")
    assert m.lookup({**base, "host_health": "up"})[0] == ()
    path.write_text("matrix:\n  - {host_health: down, actions: [drain]}\n  - {actions: [none]}\n")
    with pytest.raises(matrix.MatrixError) as exc:
        matrix.load(str(path))
    assert str(exc.value) == (f"{path}:2: host_health: unknown state 'down' (allowed: up, "
                              "degraded, any)")


def test_oom_kill_story_in_the_journal(journald, tmp_path, masakari_api, host):  # noqa: F811
    """`journalctl INSTANCE_UUID=<vm>` tells the kernel line, the rule and the delivery."""
    d = start(tmp_path, masakari_api.endpoint, host, argv_prefix=journald.prefix(),
              sections={"DEFAULT": {"use_journal": "true"}})
    try:
        with kf.memory_cgroup(48) as cg:
            proc, instance = kf.start_qemu(tmp_path, cg)
            time.sleep(1.0)
            kf.oom(proc)
            entries = journald.wait_delivered(INSTANCE_UUID=instance)
    finally:
        d.stop()
    finding = [e for e in entries if e.get("FINDING") == "oom_kill"]
    assert len(finding) == 1, journald.messages(INSTANCE_UUID=instance)
    assert finding[0]["KERNEL_RULE"] == "oom-kill"
    assert f"Killed process {proc.pid} (qemu-system-x86)" in finding[0]["KERNEL_LINE"]
    delivered = [e for e in entries if e.get("DELIVERY_STATE") == "delivered"]
    assert finding[0]["NOTIFICATION_ID"] == delivered[0]["NOTIFICATION_ID"]
    assert {e["SYSLOG_IDENTIFIER"] for e in entries} == {"ha-hostmonitor"}


def test_a_scan_between_the_kill_and_its_record_keeps_the_victims_uuid(tmp_path):
    import uuid as uuid_mod

    from hostmonitor.kernel import KernelWatcher

    conf = _conf(tmp_path, hardware_check_interval=0)
    conf.set_override("state_path", str(tmp_path))
    sent = []

    class Put:
        id = 1

    def emit(notification, decision=None, drivers=None):
        sent.append((notification.payload, decision))
        return Put()

    w = KernelWatcher(conf, lambda: None)
    w.emit = emit
    instance = str(uuid_mod.uuid4())
    proc = subprocess.Popen([str(kf.fake_qemu(tmp_path)), "-c", "import time; time.sleep(60)",
                             "-uuid", instance])
    try:
        wait_for(lambda: w._rescan() or proc.pid in w.qemu, 10, what="qemu in the map")
    finally:
        proc.kill()
        proc.wait()
    w._rescan()  # the process is gone: the map still knows it
    line = (f"Memory cgroup out of memory: Killed process {proc.pid} (qemu-system-x86) "
            "total-vm:58728kB")
    assert w.handle(kmsg.Record(9, 3, 0, 9, line)) is True
    payload, decision = sent[0]
    assert payload == {"event": "LIFECYCLE", "instance_uuid": instance,
                       "vir_domain_event": "STOPPED_FAILED"}
    assert decision["instance_uuid_from"] == "command line captured before the kill"


def test_drain_driver_must_reach_something_that_drains(tmp_path):
    conf = write_conf(tmp_path / "hm.conf", hostname="x", state_path=tmp_path, endpoint=None,
                      sections={"hostmonitor": {"storage_paths": str(tmp_path),
                                                "drain_driver": "masakari"}})
    out = cli(conf, "check-config")
    assert out.returncode != 0
    assert "[hostmonitor] drain_driver: masakari does not disable a compute service" in (
        out.stdout + out.stderr)
    conf.write_text(conf.read_text().replace("drain_driver = masakari", "drain_driver = webhook"))
    out = cli(conf, "check-config")
    assert "drain_driver: 'webhook' is not in [delivery] drivers" in out.stdout + out.stderr
