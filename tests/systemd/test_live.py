"""The shipped units under a real systemd 252 as PID 1 (tests/fixtures/systemd_pid1.py),
with the project installed as docs/install.md says and a real masakari-api on loopback.

One boot per module (~3 s) and one install (~20 s); each test starts the units it needs and
stops them. What an operator sees is asserted: `systemctl` exit codes and properties, the
journal queried with `journalctl -u UNIT FIELD=value`, the notifications as Masakari stored
them, `systemd-analyze security` scores."""
from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from tests.fixtures import cib, systemd_pid1
from tests.helpers import wait_for

from tests.ci_skips import ci

pytestmark = [pytest.mark.slow]

# The cgroup layouts systemd is booted in, the host's own first: here (hybrid) also a v2-only
# one on a subtree of /sys/fs/cgroup/unified; on a v2-only host (Debian 12, Ubuntu 22.04+,
# RHEL 9) unified alone. Every test runs on the first; those marked @both_layouts on each
# (one more boot and install, ~15 s), the cheap ones that show the units' systemd contract.
LAYOUTS = systemd_pid1.layouts() or [None]


def both_layouts(test):
    test.both_layouts = True
    return test


def unified_only(test):
    test.unified_only = True
    return test


def pytest_generate_tests(metafunc):
    if "system" in metafunc.fixturenames:
        wanted = LAYOUTS if getattr(metafunc.function, "both_layouts", False) else LAYOUTS[:1]
        if getattr(metafunc.function, "unified_only", False):
            wanted = [systemd_pid1.UNIFIED if systemd_pid1.UNIFIED in LAYOUTS else None]
        metafunc.parametrize("system", wanted, indirect=True, scope="module",
                             ids=[str(layout) for layout in wanted])

UNITS = ("ha-instancemonitor", "ha-processmonitor", "ha-hostmonitor")
CONF = "/etc/compute-ha-monitors/monitors.conf"
STATE = "/var/lib/compute-ha-monitors"
CIB_DIR = "/var/lib/ha-test-cib"
VICTIM = """[Unit]
Description=a service processmonitor watches ({tag})
[Service]
ExecStart=/bin/sleep {tag}
"""
TIMINGS: dict[str, float] = {}


def _conf(hostname: str, endpoint: str, extra: str = "", api: bool = True) -> str:
    text = f"""[DEFAULT]
hostname = {hostname}
debug = true

[libvirt]
# libvirt's built-in test driver: no libvirtd needed, domain events work in-process
connection_uri = test:///default

[delivery]
retry_initial_interval = 0.2
retry_max_interval = 1
http_timeout = 5
idle_poll_interval = 0.2

[process]
process_list_path = /etc/compute-ha-monitors/process_list.yaml
check_interval = 2
restart_interval = 1

[hostmonitor]
management_interfaces = lo

[host]
monitoring_driver = none
"""
    if api:
        text += f"\n[api]\nauth_type = none\nendpoint = {endpoint}\n"
    return text + extra


@pytest.fixture(scope="module")
def system(request, tmp_path_factory, masakari_api):
    layout = request.param
    why = systemd_pid1.missing(layout) if layout else (
        systemd_pid1.missing() or "no cgroup layout to boot in")
    if why:  # under CI a skip is a failure anyway (tests/ci_skips.py): say so plainly
        (pytest.fail if ci() else pytest.skip)(f"systemd as PID 1 cannot be booted: {why}")
    house = systemd_pid1.wheelhouse()
    pid1 = systemd_pid1.Pid1(tmp_path_factory.mktemp(f"pid1-{layout}"), layout)
    cache = systemd_pid1.opt_cache(house)
    pid1.start(seed_opt=cache)
    TIMINGS[f"boot {layout}"] = pid1.boot_seconds
    try:
        TIMINGS[f"install {layout}"] = pid1.install(house, save_opt=cache)
        pid1.hostname = f"cmp-sd-{uuid.uuid4().hex[:8]}"
        masakari_api.ensure_host(pid1.hostname)
        pid1.endpoint = masakari_api.endpoint
        pid1.write(CONF, _conf(pid1.hostname, pid1.endpoint), 0o640)
        pid1.write("/etc/compute-ha-monitors/process_list.yaml", "[]\n", 0o644)
        yield pid1
    finally:
        print(f"\nsystemd as PID 1 ({layout}): boot {TIMINGS.get(f'boot {layout}', 0):.2f} s, "
              f"install {TIMINGS.get(f'install {layout}', 0):.1f} s")
        pid1.stop()


@pytest.fixture
def units(system):
    """Starts nothing; stops every ha-* unit and removes test drop-ins afterwards."""
    yield system
    system.run("sh", "-c", "rm -rf /etc/systemd/system/ha-*.service.d/test.conf")
    system.systemctl("daemon-reload")
    system.systemctl("stop", *UNITS, check=False)
    system.systemctl("reset-failed", check=False)


def _dropin(system, unit: str, text: str) -> None:
    system.run("mkdir", "-p", f"/etc/systemd/system/{unit}.service.d")
    system.write(f"/etc/systemd/system/{unit}.service.d/test.conf", f"[Service]\n{text}\n")
    system.systemctl("daemon-reload")


def _notify(system, payload: dict, *, as_user: str | None = None, host: str | None = None,
            type_: str = "VM") -> str:
    argv = ["ha-monitors", "notify", "--type", type_, "--payload", json.dumps(payload)]
    if host:
        argv += ["--hostname", host]
    if as_user:
        argv = ["setpriv", f"--reuid={as_user}", f"--regid={as_user if as_user == 'root' else 'haclient'}",
                "--init-groups", *argv]
    out = system.run(*argv).stdout
    return re.search(r"notification (\d+)", out).group(1)


def _vm(event: str = "STOPPED_SHUTDOWN") -> dict:
    return {"event": "LIFECYCLE", "instance_uuid": str(uuid.uuid4()), "vir_domain_event": event}


def _stored(api, host: str, type_: str = "VM") -> list[dict]:
    return api.notifications(type=type_, hostname=host)


def _sent(api, host: str, key: str, value: str, type_: str = "VM") -> list[int | None]:
    """Answer statuses of every POST of a notification whose payload[key] is value: what
    "once" counts (the API 409s a re-send and stores nothing, so _stored cannot show it)."""
    return [p.status for p in api.posts(type=type_, hostname=host)
            if isinstance(p.payload, dict) and p.payload.get(key) == value]


def _outbox(system) -> list[dict]:
    return json.loads(system.run("ha-monitors", "outbox", "list", "--json").stdout)


# -- READY -----------------------------------------------------------------------------------

@pytest.mark.parametrize("unit", UNITS)
@both_layouts
def test_each_unit_reaches_ready_as_type_notify(units, unit):
    """`systemctl start` of a Type=notify unit returns only after READY=1: active/running
    right away, with the daemon's STATUS line and the watchdog armed."""
    started = time.monotonic()
    units.systemctl("start", unit)
    TIMINGS[f"start {unit}"] = time.monotonic() - started
    props = units.show(unit, "ActiveState", "SubState", "StatusText", "WatchdogUSec",
                       "NRestarts", "MainPID")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    assert "outbox" in props["StatusText"], props  # the daemon's own status line
    assert props["WatchdogUSec"] == "30s"
    entries = units.journalctl("-u", unit, "-b", "MESSAGE_ID=39f53479d3a045ac8e11786248231fbf")
    assert entries, "no 'Started' message from systemd"  # systemd logs the job as done


# -- the cgroup layout ---------------------------------------------------------------------------

BOOT_LOG = {  # systemd 252's own words (src/core/cgroup.c), logged at boot
    "unified": "Unified cgroup hierarchy is located at /sys/fs/cgroup.",
    "hybrid": "Unified cgroup hierarchy is located at /sys/fs/cgroup/unified. "
              "Controllers are on legacy hierarchies.",
}


@both_layouts
def test_boots_in_its_layout_on_its_own_cgroup_subtree(units):
    """systemd says at boot which layout it found — on the v2-only one the layout of
    Debian 12, Ubuntu 22.04+ and RHEL 9 — and a started unit's processes are in the
    delegated subtree of the host's tree (and nowhere else of it)."""
    log = units.log_tail(10**7)
    assert BOOT_LOG[units.layout] in log, log[-3000:]
    other = BOOT_LOG["hybrid" if units.layout == "unified" else "unified"]
    assert other not in log
    fstype = units.run("stat", "-f", "-c", "%T", "/sys/fs/cgroup").stdout.strip()
    assert fstype == ("cgroup2fs" if units.layout == "unified" else "tmpfs"), fstype
    units.systemctl("start", "ha-hostmonitor")
    main = units.show("ha-hostmonitor", "MainPID", "ControlGroup")
    assert main["ControlGroup"] == "/system.slice/ha-hostmonitor.service", main
    for tree in units.cgroups:  # name=systemd and cgroup2 (hybrid), cgroup2 (unified)
        procs = (tree / "system.slice/ha-hostmonitor.service/cgroup.procs").read_text().split()
        inner = [systemd_pid1.inner_pid(int(p)) for p in procs]
        assert int(main["MainPID"]) in inner, (tree, procs, inner, main)


@unified_only
def test_hostmonitor_device_policy_is_enforced_on_cgroup_v2(units):
    """On cgroup v2 systemd enforces DevicePolicy= with a BPF device program (v1 had the
    devices controller, which the hybrid test namespace does not mount: there it is never
    enforced). ha-hostmonitor's sandbox (DevicePolicy=closed, DeviceAllow=/dev/kmsg r) must
    let it open the kernel log and nothing else: the shipped unit with only its ExecStart
    replaced by a probe (drop-in), against /dev/kmsg and another device node (fuse)."""
    units.run("mknod", "-m", "0600", "/dev/kmsg", "c", "1", "11")
    units.run("mknod", "-m", "0666", "/dev/ha-test-fuse", "c", "10", "229")
    try:
        _dropin(units, "ha-hostmonitor", "Type=oneshot\nRestart=no\nWatchdogSec=0\n"
                "ExecReload=\nExecStart=\nExecStart=/bin/sh -c 'for d in /dev/kmsg "
                "/dev/ha-test-fuse; do if (exec 3<$d) 2>/dev/null; then echo \"probe $d "
                "opened\"; else echo \"probe $d denied\"; fi; done'")
        units.systemctl("start", "ha-hostmonitor")
        out = units.run("journalctl", "-u", "ha-hostmonitor", "-b", "-o", "cat",
                        "--no-pager").stdout
        probes = sorted(line for line in out.splitlines() if line.startswith("probe "))
        assert probes == ["probe /dev/ha-test-fuse denied", "probe /dev/kmsg opened"], out
    finally:
        units.run("rm", "-f", "/dev/kmsg", "/dev/ha-test-fuse")


# -- ha-instancemonitor alone: AF_NETLINK ------------------------------------------------------

def test_instancemonitor_alone_delivers(units, masakari_api):
    """Only ha-instancemonitor runs, so only its delivery worker can send: with
    RestrictAddressFamilies lacking AF_NETLINK every POST failed with EAFNOSUPPORT (glibc's
    resolver opens a netlink socket)."""
    units.systemctl("start", "ha-instancemonitor")
    payload = _vm()
    nid = _notify(units, payload)
    rows = wait_for(lambda: [r for r in _stored(masakari_api, units.hostname)
                             if r["payload"].get("instance_uuid") == payload["instance_uuid"]],
                    20, interval=0.2, what="the VM notification stored by masakari-api")
    assert len(rows) == 1
    assert _sent(masakari_api, units.hostname, "instance_uuid", payload["instance_uuid"]) \
        == [202]
    row = json.loads(units.run("ha-monitors", "outbox", "show", nid, "--json").stdout)
    assert row["state"] == "delivered", row
    # and the journal says who delivered it, queried by its fields
    entries = units.journalctl("-u", "ha-instancemonitor", f"NOTIFICATION_ID={nid}",
                               "DELIVERY_STATE=delivered")
    assert entries, units.run("journalctl", "-u", "ha-instancemonitor", "-n", "30").stdout


# -- watchdog --------------------------------------------------------------------------------

@both_layouts
def test_watchdog_restarts_a_sigstopped_daemon(units):
    """A hung daemon (SIGSTOP: no more WATCHDOG=1) is killed by systemd's watchdog and
    restarted by Restart=on-failure. WatchdogSec shortened by a drop-in (docs/systemd.md)."""
    _dropin(units, "ha-hostmonitor", "WatchdogSec=3")
    units.systemctl("start", "ha-hostmonitor")
    old = units.show("ha-hostmonitor", "MainPID")["MainPID"]
    units.run("kill", "-STOP", old)
    stopped = time.monotonic()

    def restarted():
        p = units.show("ha-hostmonitor", "MainPID", "NRestarts", "ActiveState", "SubState")
        return p if (p["NRestarts"] == "1" and p["MainPID"] not in ("0", old)
                     and p["SubState"] == "running") else None
    props = wait_for(restarted, 20, interval=0.2, what="the watchdog restart")
    TIMINGS["watchdog restart"] = time.monotonic() - stopped
    text = units.run("journalctl", "-u", "ha-hostmonitor", "-b", "--no-pager").stdout
    assert "Watchdog timeout" in text, text[-3000:]
    assert props["ActiveState"] == "active"


# -- reload ----------------------------------------------------------------------------------

def test_reload_good_and_bad_config(units):
    """`systemctl reload` (ExecReload = `ha-monitors reload`, which waits for the daemon's
    verdict): a good config is taken, exit 0; a bad one is refused — `systemctl reload`
    exits non-zero, the reason is in `systemctl status` (StatusText) and the journal, the
    daemon keeps running with the old one."""
    units.systemctl("start", "ha-processmonitor")
    pid = units.show("ha-processmonitor", "MainPID")["MainPID"]
    r = units.systemctl("reload", "ha-processmonitor", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SIGHUP: reloading" in units.run(
        "journalctl", "-u", "ha-processmonitor", "-b", "--no-pager").stdout
    good = units.read(CONF)
    units.write(CONF, good + "\n[delivery]\nworkers = zero\n", 0o640)
    try:
        r = units.systemctl("reload", "ha-processmonitor", check=False)
        assert r.returncode != 0, "systemctl reload accepted a configuration the daemon refused"
        assert "ha-processmonitor.service" in r.stderr  # systemctl names the failed job
        journal = units.run("journalctl", "-u", "ha-processmonitor", "-b", "--no-pager").stdout
        # the refusal names the file and line, then the option (check-config's wording)
        assert re.search(r"refused the new configuration, the old one stays in force: "
                         rf"{re.escape(CONF)}:\d+: \[delivery\] workers", journal), \
            journal[-3000:]
        assert "Reload failed for ha-processmonitor.service" in journal
        status = wait_for(lambda: (lambda s: s if "reload" in s and "workers" in s else None)(
            units.show("ha-processmonitor", "StatusText")["StatusText"]), 10,
            what="the refusal in StatusText")
        assert "rejected" in status or "refuse" in status, status
        assert units.show("ha-processmonitor", "MainPID")["MainPID"] == pid  # still running
        assert units.show("ha-processmonitor", "ActiveState")["ActiveState"] == "active"
    finally:
        units.write(CONF, good, 0o640)
    r = units.systemctl("reload", "ha-processmonitor", check=False)
    assert r.returncode == 0, r.stdout + r.stderr  # the good file is taken again


# -- processmonitor restarting units -----------------------------------------------------------

@pytest.mark.parametrize("how", ["restart_command", "systemd_unit"])
@both_layouts
def test_processmonitor_restarts_a_unit(units, how):
    """A watched service (its own unit) killed → processmonitor restarts it through
    `systemctl restart` (given as restart_command, or derived from systemd_unit)."""
    tag = str(10000 + (hash(how) % 50000))
    unit = f"ha-test-victim-{tag}"
    units.write(f"/etc/systemd/system/{unit}.service", VICTIM.format(tag=tag))
    units.systemctl("daemon-reload")
    units.systemctl("start", unit)
    entry = {"process_name": f"/bin/sleep {tag}", "restart_retries": 1}
    if how == "restart_command":
        entry["restart_command"] = f"systemctl restart {unit}"
    else:
        entry["systemd_unit"] = unit
    units.write("/etc/compute-ha-monitors/process_list.yaml", json.dumps([entry]) + "\n")
    try:
        units.systemctl("start", "ha-processmonitor")
        old = units.show(unit, "MainPID")["MainPID"]
        units.systemctl("kill", "--signal=KILL", unit)
        props = wait_for(lambda: (lambda p: p if p["MainPID"] not in ("0", old)
                                  and p["ActiveState"] == "active" else None)(
            units.show(unit, "MainPID", "ActiveState")), 15, interval=0.2,
            what=f"{unit} restarted by processmonitor")
        assert props["ActiveState"] == "active"
        entries = wait_for(lambda: [e for e in units.journalctl("-u", "ha-processmonitor", "-b")
                                    if "restarted" in str(e.get("MESSAGE"))], 10,
                           what="the restart in the journal")
        assert any(e.get("PROCESS_NAME") for e in entries), entries
    finally:
        units.write("/etc/compute-ha-monitors/process_list.yaml", "[]\n")
        units.systemctl("stop", unit, check=False)


# -- stop/start with pending rows ----------------------------------------------------------------

def test_stop_start_with_pending_rows_loses_nothing_sends_nothing_twice(units, masakari_api):
    """The API is down: rows wait in the outbox. `systemctl stop` (SIGTERM, graceful),
    the API comes back, `systemctl start`: each row is POSTed (and stored) once."""
    units.systemctl("start", "ha-instancemonitor")
    masakari_api.kill()
    try:
        payloads = [_vm() for _ in range(3)]
        ids = [_notify(units, p) for p in payloads]
        # the worker has found the API unreachable (it then probes with the oldest rows
        # only, and the rest wait for the API to answer: core delivery design)
        wait_for(lambda: any(r["deliveries"][0]["attempts"] >= 2 for r in _outbox(units)
                             if str(r["id"]) in ids), 15, interval=0.2,
                 what="delivery attempted while the API is down")
        units.systemctl("stop", "ha-instancemonitor")
        assert {r["state"] for r in _outbox(units) if str(r["id"]) in ids} == {"pending"}
    finally:
        masakari_api.restart()
    units.systemctl("start", "ha-instancemonitor")
    wanted = {p["instance_uuid"] for p in payloads}

    def stored():
        rows = [r for r in _stored(masakari_api, units.hostname)
                if r["payload"].get("instance_uuid") in wanted]
        return rows if len(rows) >= len(wanted) else None
    wait_for(stored, 30, interval=0.3, what="the pending rows delivered after the start")
    time.sleep(1.0)  # a second send would arrive within the idle poll
    rows = [r for r in _stored(masakari_api, units.hostname)
            if r["payload"].get("instance_uuid") in wanted]
    assert sorted(r["payload"]["instance_uuid"] for r in rows) == sorted(wanted)
    for instance in wanted:  # POSTed once each: a re-send would be a 409, not a stored row
        assert _sent(masakari_api, units.hostname, "instance_uuid", instance) == [202]
    assert {r["state"] for r in _outbox(units) if str(r["id"]) in ids} == {"delivered"}


# -- journald fields ------------------------------------------------------------------------------

def test_journal_fields_per_unit(units, masakari_api):
    """`journalctl -u UNIT FIELD=value` finds a daemon's entries by the fields docs/systemd.md
    lists (INSTANCE_UUID, NOTIFICATION_ID, HOSTNAME, DELIVERY_STATE)."""
    units.systemctl("start", "ha-instancemonitor")
    payload = _vm()
    nid = _notify(units, payload)
    wait_for(lambda: units.journalctl("-u", "ha-instancemonitor", f"NOTIFICATION_ID={nid}",
                                      "DELIVERY_STATE=delivered"), 20, interval=0.2,
             what="the delivered entry")
    by_host = units.journalctl("-u", "ha-instancemonitor", f"HOSTNAME={units.hostname}",
                               f"INSTANCE_UUID={payload['instance_uuid']}")
    assert by_host and all(e["_SYSTEMD_UNIT"] == "ha-instancemonitor.service" for e in by_host)
    assert {e["NOTIFICATION_ID"] for e in by_host} == {nid}


# -- systemd-analyze security -----------------------------------------------------------------------

LIVE_EXPOSURE = {"ha-instancemonitor": 2.0, "ha-hostmonitor": 2.5, "ha-processmonitor": 9.0}
LIVE_SYSTEMCTL_ONLY = 2.5  # ha-processmonitor with ha-processmonitor-systemctl-only.conf


def _exposure(system, unit: str) -> float:
    out = system.run("systemd-analyze", "security", "--no-pager", f"{unit}.service").stdout
    return float(re.search(r"Overall exposure level for \S+: (\d+\.\d)", out).group(1))


def test_live_security_scores_stay_below_thresholds(units):
    """`systemd-analyze security` against the running manager (the scores quoted in
    docs/systemd.md), as shipped, with the systemctl-only drop-in for processmonitor, and
    with the state-group drop-in on all three (which must not weaken them)."""
    scores = {u: _exposure(units, u) for u in UNITS}
    for unit, score in scores.items():
        assert score <= LIVE_EXPOSURE[unit], (unit, score)
    src = f"{systemd_pid1.INSIDE}/src/systemd"
    units.run("install", "-D", "-m", "0644", f"{src}/ha-processmonitor-systemctl-only.conf",
              "/etc/systemd/system/ha-processmonitor.service.d/test.conf")
    units.systemctl("daemon-reload")
    scores["ha-processmonitor + systemctl-only"] = _exposure(units, "ha-processmonitor")
    assert scores["ha-processmonitor + systemctl-only"] <= LIVE_SYSTEMCTL_ONLY
    for unit in UNITS:
        units.run("install", "-D", "-m", "0644", f"{src}/ha-state-group.conf",
                  f"/etc/systemd/system/{unit}.service.d/test.conf")
    units.systemctl("daemon-reload")
    for unit in UNITS:
        scores[f"{unit} + state-group"] = score = _exposure(units, unit)
        assert score <= LIVE_EXPOSURE[unit], (unit, score)
    TIMINGS.update({f"exposure {u}": s for u, s in scores.items()})
    print("live exposure:", scores)


# -- hacluster hands over through the state_group ----------------------------------------------------

def test_hacluster_alert_agent_hands_over_through_state_group(units, masakari_api):
    """docs/hostmonitor-peers.md's set-up, run for real: state_group = haclient, secrets in a
    root-only conf.d file, the ha-state-group.conf drop-in; then Pacemaker's alert agent and
    `ha-monitors notify`, run as hacluster, put rows into the outbox, and a daemon (root)
    delivers them."""
    if "hacluster" not in units.run("getent", "passwd", "hacluster", check=False).stdout:
        pytest.skip("no hacluster user (apt pacemaker)")
    peer = f"cmp-sd-peer-{uuid.uuid4().hex[:8]}"
    masakari_api.ensure_host(peer)
    good = units.read(CONF)
    # No cluster runs here: with the DC election (branch pacemaker-live) the agent is then a
    # standby that reports after reporter_grace; keep that short (an unknown option before).
    units.write(CONF, _conf(units.hostname, units.endpoint, api=False).replace(
        "debug = true", "debug = true\nstate_group = haclient")
        + "\n[hostmonitor_peers]\nreporter_grace = 1\n", 0o640)
    units.run("chgrp", "haclient", CONF)
    units.run("install", "-d", "-m", "0755", "/etc/compute-ha-monitors/monitors.conf.d")
    units.write("/etc/compute-ha-monitors/monitors.conf.d/secrets.conf",
                f"[api]\nauth_type = none\nendpoint = {units.endpoint}\n", 0o600)
    src = f"{systemd_pid1.INSIDE}/src/systemd/ha-state-group.conf"
    try:
        for d in ("instancemonitor", "processmonitor", "hostmonitor"):
            units.run("install", "-D", "-m", "0644", src,
                      f"/etc/systemd/system/ha-{d}.service.d/state-group.conf")
        units.systemctl("daemon-reload")
        units.systemctl("start", "ha-hostmonitor")
        st = units.run("stat", "-c", "%a %U:%G", STATE, f"{STATE}/outbox.sqlite").stdout.split("\n")
        assert st[0] == "2770 root:haclient" and st[1] == "660 root:haclient", st
        # hacluster cannot read the secrets, and does not need them
        r = units.run("setpriv", "--reuid=hacluster", "--regid=haclient", "--init-groups",
                      "cat", "/etc/compute-ha-monitors/monitors.conf.d/secrets.conf", check=False)
        assert r.returncode != 0 and "Permission denied" in r.stderr
        # No cluster runs in this namespace: the Pacemaker CLI reads a CIB file instead
        # (CIB_file), in which this host is the DC with quorum and the peer is offline — the
        # view the agent would get on the surviving DC. The live cluster's own agent runs
        # are tests/hostmonitor/peers (pacemaker-live).
        units.run("install", "-d", "-m", "0750", "-o", "hacluster", "-g", "haclient", CIB_DIR)
        units.write(f"{CIB_DIR}/cib.xml", cib.cib_xml({units.hostname: True, peer: False}), 0o660)
        units.run("chown", "hacluster:haclient", f"{CIB_DIR}/cib.xml")
        env = {"CRM_alert_kind": "fencing", "CRM_alert_node": peer, "CRM_alert_task": "reboot",
               "CIB_file": f"{CIB_DIR}/cib.xml",
               "CRM_alert_rc": "0", "CRM_alert_recipient": CONF,
               "CRM_alert_desc": f"Operation reboot of {peer} by node1 for x@node1: OK",
               "CRM_alert_timestamp_epoch": str(int(time.time())),
               "CRM_alert_timestamp_usec": "0"}
        r = units.run("setpriv", "--reuid=hacluster", "--regid=haclient", "--init-groups",
                      "env", *(f"{k}={v}" for k, v in env.items()), "ha-pacemaker-alert",
                      check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        try:
            rows = wait_for(lambda: _stored(masakari_api, peer, "COMPUTE_HOST"), 20,
                            interval=0.2, what="the alert agent's COMPUTE_HOST stored")
        except AssertionError as exc:
            log = units.run("sh", "-c", f"cat {STATE}/pacemaker-alert/*.log; ls -la {STATE} "
                            f"{STATE}/pacemaker-alert", check=False)
            raise AssertionError(f"{exc}\nagent: {r.stderr}\n{log.stdout}{log.stderr}"
                                 f"\noutbox: {json.dumps(_outbox(units))[-2000:]}") from None
        assert len(rows) == 1
        assert rows[0]["payload"] == {"event": "STOPPED", "cluster_status": "OFFLINE",
                                      "host_status": "NORMAL"}
        assert _sent(masakari_api, peer, "event", "STOPPED", "COMPUTE_HOST") == [202]
        # `ha-monitors notify` by hacluster, too
        payload = _vm()
        _notify(units, payload, as_user="hacluster")
        wait_for(lambda: [r for r in _stored(masakari_api, units.hostname)
                          if r["payload"].get("instance_uuid") == payload["instance_uuid"]],
                 20, interval=0.2, what="hacluster's VM notification stored")
        owners = units.run("sh", "-c", f"stat -c '%n %a %U:%G' {STATE}/outbox.sqlite* "
                                       f"{STATE}/pacemaker-alert").stdout
        assert "root:root" not in owners, owners
    finally:
        units.run("sh", "-c", "rm -rf /etc/systemd/system/ha-*.service.d/state-group.conf "
                  "/etc/compute-ha-monitors/monitors.conf.d/secrets.conf")
        units.write(CONF, good, 0o640)
        units.run("chgrp", "root", CONF)


# -- docs/install.md: the venv's interpreter -------------------------------------------------------

def test_installed_venv_runs_under_protecthome_and_one_from_root_would_not(units):
    """docs/install.md builds the venv with /usr/bin/python3. A venv made by an interpreter
    under /root (pyenv's place) cannot be executed with ProtectHome=yes: the unit fails with
    203/EXEC — what every unit did when the doc said `python3` on a host with pyenv. The
    interpreter under /root is made here (a copy of /usr/bin/python3 with its standard
    library, as pyenv lays one out), in the namespace's /root overlay: the host's /root is
    untouched and the test needs no pyenv."""
    real = units.run("readlink", "-f", f"{systemd_pid1.VENV}/bin/python3").stdout.strip()
    assert real.startswith("/usr/bin/python3"), real
    home = "/root/.ha-test-python"
    units.run("sh", "-c", f"""set -e
        exe=$(readlink -f /usr/bin/python3); ver=$(basename "$exe")
        mkdir -p {home}/bin {home}/lib
        cp "$exe" {home}/bin/$ver && ln -sf $ver {home}/bin/python3
        ln -sfn /usr/lib/$ver {home}/lib/$ver
        {home}/bin/python3 -m venv --without-pip /opt/ha-test-pyenv-venv""")
    target = units.run("readlink", "-f", "/opt/ha-test-pyenv-venv/bin/python3").stdout.strip()
    assert target.startswith(f"{home}/bin/"), target  # the venv runs the /root interpreter
    template = ("[Service]\nType=oneshot\nProtectHome=yes\n"
                "ExecStart={venv}/bin/python3 -c 'import sys; print(sys.prefix)'\n")
    results = {}
    try:
        for unit, venv in (("ha-test-pyenv", "/opt/ha-test-pyenv-venv"),
                           ("ha-test-opt-venv", systemd_pid1.VENV)):
            units.write(f"/etc/systemd/system/{unit}.service", template.format(venv=venv))
            units.systemctl("daemon-reload")
            r = units.systemctl("start", unit, check=False)
            results[unit] = (r.returncode, units.show(unit, "ExecMainStatus", "Result"))
        # without ProtectHome it runs: the failure is /root hidden, not a broken interpreter
        assert units.run("/opt/ha-test-pyenv-venv/bin/python3", "-c", "import json").returncode == 0
        assert results["ha-test-opt-venv"] == (0, {"ExecMainStatus": "0", "Result": "success"}), \
            results
        code, props = results["ha-test-pyenv"]
        assert code != 0 and props == {"ExecMainStatus": "203", "Result": "exit-code"}, results
    finally:
        units.systemctl("reset-failed", "ha-test-pyenv", "ha-test-opt-venv", check=False)
