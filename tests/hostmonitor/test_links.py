"""ha-hostmonitor in a network namespace against the real masakari-api: link changes of
each role → the matrix action → the notification as the API stored it."""
from __future__ import annotations

import json
import re
import signal
import time

import pytest

from tests.helpers import Daemon, wait_for, write_conf

# This host's own verdict: never host_status NORMAL (only the peers say NORMAL, once the
# cluster confirmed the fencing); Masakari records UNKNOWN and evacuates nothing.
STOPPED = {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "UNKNOWN"}
STARTED = {"event": "STARTED", "cluster_status": "ONLINE", "host_status": "NORMAL"}


def start(topo, tmp_path, host, sections=None, argv_prefix=(), **hm):
    opts = {"management_interfaces": "m0", "tenant_interfaces": "t0,t1",
            "storage_interfaces": "brs", "compute_processes": "",
            # undamped in tests unless a test says otherwise (production: 30 s, 3 samples)
            "evaluation_interval": 0.5, "hold_down": 0, **hm}
    host_opts = {"monitoring_samples": opts.pop("samples", 1)}
    conf = write_conf(tmp_path / "hm.conf", hostname=host, state_path=tmp_path,
                      endpoint=topo.endpoint, sections={"hostmonitor": opts,
                                                        "host": host_opts, **(sections or {})})
    return Daemon("hostmonitor", conf, argv_prefix=[*argv_prefix, *topo.d.prefix()]).start()


def payloads(topo, host):
    return [json.loads(n["payload"]) if isinstance(n["payload"], str) else n["payload"]
            for n in topo.notifications(host)]


def sent(topo, host, type_="COMPUTE_HOST"):
    """(payload, answer status) of every POST about ``host``: a re-send is 409'd and not
    stored, so only this shows it."""
    return [(p.payload, p.status) for p in topo.api.posts(type=type_, hostname=host)]


def wait_payloads(topo, host, expected, timeout=15):
    """Until the API stored ``expected``; then each of them must have been POSTed once."""
    def ok():
        got = payloads(topo, host)
        return got if got == expected else None
    try:
        got = wait_for(ok, timeout, interval=0.2, what=f"API to store {expected}")
    except AssertionError:
        raise AssertionError(f"API has {payloads(topo, host)}, expected {expected}")
    time.sleep(0.5)  # a re-send of the last one would have followed by now
    assert sent(topo, host) == [(p, 202) for p in expected], "each POSTed once"
    return got


@pytest.mark.slow
@pytest.mark.parametrize("role,change", [("tenant", "admin"), ("storage", "carrier")])
def test_role_down_reports_and_recovery_sends_started(links_up, tmp_path, role, change):
    topo = links_up
    host = topo.new_host()
    members = {"tenant": ("t0", "t1"), "storage": ("s0", "s1")}[role]
    flip = topo.admin if change == "admin" else topo.carrier
    d = start(topo, tmp_path, host)
    try:
        flip(members[0], "down")  # one member of the set/bridge: degraded, nothing sent
        wait_for(lambda: f"{role}: up -> degraded" in d.log_text(), 10, what="degraded")
        assert payloads(topo, host) == []
        flip(members[1], "down")  # all members down: the role is down
        wait_payloads(topo, host, [STOPPED])
        flip(members[0], "up")
        flip(members[1], "up")
        wait_payloads(topo, host, [STOPPED, STARTED])
        assert "report_host_failure" in d.log_text()
    finally:
        d.stop()


@pytest.mark.slow
def test_management_outage_verdict_is_unknown_and_the_log_tells_the_truth(links_up, tmp_path):
    """A verdict queued while the management link (the API's only path) is down: durable,
    delivered when the API answers again. It is this host's own verdict, so UNKNOWN:
    Masakari records it and evacuates nothing, even though the condition cleared before
    delivery. The log says what is true (issue 14: it said "held until it returns", then
    the row was delivered 33 ms later where the API had another path)."""
    topo = links_up
    host = topo.new_host()
    d = start(topo, tmp_path, host)
    try:
        topo.carrier("m0", "down")  # the API is only reachable over m0
        wait_for(lambda: any("management down: 1 notifications pending" in m.get("STATUS", "")
                             for m in d.notify.drain()), 15, what="STATUS pending")
        assert payloads(topo, host) == []
        topo.carrier("m0", "up")
        wait_payloads(topo, host, [STOPPED, STARTED], timeout=20)
        log = d.log_text()
        assert ("report_host_failure: management network down: notification 1 is queued in "
                "the outbox and delivered as soon as the API answers (1 pending)") in log
        assert "held in the outbox until it returns" not in log
        assert all(p["host_status"] != "NORMAL" or p["event"] == "STARTED"
                   for p in payloads(topo, host))
    finally:
        d.stop()


@pytest.mark.slow
def test_admin_down_of_management(links_up, tmp_path):
    topo = links_up
    host = topo.new_host()
    d = start(topo, tmp_path, host)
    try:
        topo.admin("m0", "down")
        wait_for(lambda: "management: up -> down" in d.log_text(), 10, what="mgmt down")
        topo.admin("m0", "up")
        topo.d.ip("addr", "replace", "10.77.0.2/24", "dev", "m0")
        wait_payloads(topo, host, [STOPPED, STARTED], timeout=20)
    finally:
        d.stop()


@pytest.mark.slow
def test_flapping_below_damping_sends_nothing(links_up, tmp_path):
    import time

    topo = links_up
    host = topo.new_host()
    d = start(topo, tmp_path, host, samples=4, evaluation_interval=1.0)
    try:
        for _ in range(3):  # down < 4 observations (the change + periodic ones) each time
            topo.admin("t0", "down")
            topo.admin("t1", "down")
            time.sleep(0.4)
            topo.admin("t0", "up")
            topo.admin("t1", "up")
            time.sleep(1.2)
        time.sleep(1.0)
        assert payloads(topo, host) == []
        assert "tenant: degraded -> down" in d.log_text()  # flapping is visible in the log
        topo.admin("t0", "down")  # held long enough: reported once
        topo.admin("t1", "down")
        wait_payloads(topo, host, [STOPPED], timeout=15)
    finally:
        d.stop()


@pytest.mark.slow
def test_vanished_interface_counts_as_down(links_up, tmp_path):
    topo = links_up
    host = topo.new_host()
    topo.d.ip("link", "add", "t9", "type", "veth", "peer", "name", "t9p")
    topo.d.ip("link", "set", "t9", "up")
    topo.d.ip("link", "set", "t9p", "up")
    d = start(topo, tmp_path, host, tenant_interfaces="t9")
    try:
        topo.d.ip("link", "del", "t9")
        wait_payloads(topo, host, [STOPPED])
    finally:
        d.stop()
        topo.d.ip("link", "del", "t9", check=False)


def test_unknown_interface_is_a_clear_error(links_up, tmp_path):
    topo = links_up
    conf = write_conf(tmp_path / "hm.conf", hostname="x", state_path=tmp_path,
                      endpoint=topo.endpoint,
                      sections={"hostmonitor": {"management_interfaces": "m0,eth-nope"}})
    import subprocess

    from tests.helpers import BIN

    out = subprocess.run([*topo.d.prefix(), str(BIN / "ha-hostmonitor"), "--config-file",
                          str(conf)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "management_interfaces: interface 'eth-nope' does not exist" in out.stderr
    out = subprocess.run([*topo.d.prefix(), str(BIN / "ha-monitors"), "--config-file",
                          str(conf), "check-config"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0
    assert "eth-nope" in out.stdout + out.stderr


@pytest.mark.slow
def test_sighup_with_a_bad_matrix_keeps_the_old_one(links_up, tmp_path):
    topo = links_up
    host = topo.new_host()
    d = start(topo, tmp_path, host)
    try:
        bad = tmp_path / "matrix.yaml"
        bad.write_text("matrix:\n  - {tenant: down, actions: [panic]}\n")
        with open(d.conf, "a") as f:
            f.write(f"\n[hostmonitor]\nmatrix_file = {bad}\n")
        d.signal(signal.SIGHUP)
        wait_for(lambda: "new configuration rejected" in d.log_text(), 10, what="rejection")
        assert f"{bad}:2: unknown action 'panic'" in d.log_text()
        topo.admin("t0", "down")  # still the built-in cattle table
        topo.admin("t1", "down")
        wait_payloads(topo, host, [STOPPED])
    finally:
        d.stop()


@pytest.mark.slow
def test_hold_down_delays_the_report(links_up, tmp_path):
    import time

    topo = links_up
    host = topo.new_host()
    d = start(topo, tmp_path, host, hold_down=2.0, evaluation_interval=10)
    try:
        t0 = time.monotonic()
        topo.admin("t0", "down")
        topo.admin("t1", "down")
        # one evaluation may see both links go ("up -> down") or each ("degraded -> down")
        wait_for(lambda: re.search(r"tenant: \w+ -> down", d.log_text()), 5,
                 what="tenant down")
        assert payloads(topo, host) == []
        wait_payloads(topo, host, [STOPPED], timeout=10)
        assert time.monotonic() - t0 >= 2.0
    finally:
        d.stop()
