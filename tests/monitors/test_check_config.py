"""check-config catches what would fail later, naming file and line; no CLI input gives a
traceback; an invalid hostname is refused at daemon start and on reload (SIGHUP)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from tests.helpers import cli, deliverer, wait_for, write_conf


def conf_with(tmp_path, text: str):
    path = tmp_path / "m.conf"
    path.write_text(f"[DEFAULT]\nstate_path = {tmp_path / 'state'}\n" + text)
    return path


def line_of(path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_unknown_api_option_named_with_file_line_and_a_suggestion(tmp_path):
    conf = conf_with(tmp_path, "hostname = h1\n[api]\nauth_type = none\n"
                               "endpont = http://127.0.0.1:9/v1\n")
    r = cli(conf, "check-config")
    assert r.returncode == 1
    assert (f"{conf}:{line_of(conf, 'endpont')}: warning: [api] endpont: unknown option "
            "(did you mean 'endpoint'?), ignored") in r.stderr
    # what would fail: nothing to deliver to
    assert (f"error: {conf}:{line_of(conf, 'auth_type')}: [api] endpoint: required with "
            "auth_type = none") in r.stderr
    assert "Traceback" not in r.stderr


def test_auth_type_naming_no_plugin_is_an_error(tmp_path):
    conf = conf_with(tmp_path, "hostname = h1\n[api]\nauth_type = pasword\n")
    r = cli(conf, "check-config")
    assert r.returncode == 1
    assert (f"error: {conf}:{line_of(conf, 'pasword')}: [api] auth_type: 'pasword' names no "
            "keystoneauth plugin (did you mean 'password'?") in r.stderr
    assert "Could not load" not in r.stderr  # no plugin import noise


def test_password_plugin_options_are_known_and_a_missing_one_named(tmp_path):
    conf = conf_with(tmp_path, "hostname = h1\n[api]\nauth_type = password\n"
                               "username = masakari\npassword = secret\n"
                               "project_name = service\nuser_domain_name = Default\n")
    r = cli(conf, "check-config")
    assert "unknown option" not in r.stderr
    assert "[api] auth_type = password:" in r.stderr and "auth_url" in r.stderr
    assert "secret" not in r.stdout + r.stderr


@pytest.mark.parametrize("hostname", ["", "compute_a!"])
def test_invalid_hostname_refused_by_check_config_and_daemon_start(tmp_path, hostname):
    conf = conf_with(tmp_path, f"hostname = {hostname}\n[api]\nauth_type = none\n"
                               "endpoint = http://127.0.0.1:9/v1\n")
    where = f"{conf}:{line_of(conf, 'hostname =')}: [DEFAULT] hostname: {hostname!r} is not a host"
    r = cli(conf, "check-config")
    assert r.returncode == 1 and f"error: {where}" in r.stderr
    daemon = deliverer(conf)
    daemon.start(wait_ready=False)
    assert daemon.proc.wait(30) == 2
    assert where in daemon.log_text()


def test_invalid_hostname_refused_on_reload(tmp_path):
    conf = write_conf(tmp_path / "m.conf", hostname="h1", state_path=tmp_path / "state",
                      endpoint="http://127.0.0.1:9/v1")
    with deliverer(conf) as daemon:
        conf.write_text(conf.read_text().replace("hostname = h1", "hostname = compute_a!"))
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: "[DEFAULT] hostname: 'compute_a!' is not a host" in daemon.log_text(),
                 what="reload refused naming the hostname")
        assert "rejected" in daemon.log_text()
        assert daemon.proc.poll() is None


def test_read_only_and_uncreatable_state_path(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a read-only tmpfs")
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", f"fpb-{os.getpid()}", str(ro)],
                   check=True)
    try:
        for state in (ro, ro / "sub"):
            conf = tmp_path / "m.conf"
            conf.write_text(f"[DEFAULT]\nhostname = h1\nstate_path = {state}\n[api]\n"
                            "auth_type = none\nendpoint = http://127.0.0.1:9/v1\n")
            r = cli(conf, "check-config")
            assert r.returncode == 1, r.stderr
            assert f"error: {conf}:3: [DEFAULT] state_path: '{state}'" in r.stderr
            assert ("read-only file system" in r.stderr if state == ro
                    else "cannot be created" in r.stderr)
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_oslo_type_errors_without_locationinfo_noise(tmp_path):
    conf = conf_with(tmp_path, "hostname = h1\n[delivery]\nhttp_timeout = abc\n")
    r = cli(conf, "check-config")
    assert r.returncode == 1
    assert (f"error: {conf}:{line_of(conf, 'abc')}: [delivery] http_timeout: could not "
            "convert string to float: 'abc'") in r.stderr
    assert "LocationInfo" not in r.stderr


def test_process_list_empty_is_a_warning_and_oversized_an_error(tmp_path):
    plist = tmp_path / "list.yaml"
    plist.write_text("# nothing here yet\n")
    conf = conf_with(tmp_path, f"hostname = h1\n[api]\nauth_type = none\n"
                               f"endpoint = http://127.0.0.1:9/v1\n[process]\n"
                               f"process_list_path = {plist}\n")
    r = cli(conf, "check-config")
    assert r.returncode == 0, r.stderr
    assert f"{plist}:1: warning: no process listed" in r.stderr
    plist.write_text("".join(f"- process_name: p{i}\n  restart_command: /bin/true\n"
                             for i in range(250)))
    r = cli(conf, "check-config")
    assert r.returncode == 1
    assert f"error: {plist}:401: 250 processes listed, at most 200 are watched" in r.stderr


def test_no_traceback_from_cli_input(tmp_path):
    conf = conf_with(tmp_path, "hostname = h1\n[api]\nauth_type = none\n"
                               "endpoint = http://127.0.0.1:9/v1\n")
    runs = [
        cli(tmp_path, "check-config"),  # --config-file names a directory
        cli(tmp_path, "outbox", "list"),
        cli(conf, "notify", "--type", "VM", "--payload", "[" * 20000 + "]" * 20000),
        cli(conf, "notify", "--type", "VM", "--payload", '{"a":' * 5000 + "1" + "}" * 5000),
        cli(conf, "notify", "--type", "VM", "--payload", "[]"),
        cli(conf, "notify", "--type", "VM", "--payload", "{}", "--wait", "--timeout", "nan"),
        cli(conf, "history", "--since", "yesterday-ish"),
    ]
    for r in runs:
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-500:]
        assert len(r.stderr.strip().splitlines()) <= 4, r.stderr  # argparse: usage + error
    assert f"{tmp_path}: Is a directory" in runs[0].stderr
    assert "nested too deeply" in runs[2].stderr and "nested too deeply" in runs[3].stderr
    # the outbox unreadable: a directory where the file should be, and a non-root user
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / "outbox.sqlite").mkdir()
    for args in (("outbox", "list"), ("history",), ("notify", "--type", "COMPUTE_HOST",
                                                    "--payload", '{"event": "STOPPED"}')):
        r = cli(conf, *args)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert f"outbox {tmp_path / 'state' / 'outbox.sqlite'}: cannot open it" in r.stderr


def test_notify_wait_honours_its_timeout(tmp_path):
    """A recipient that accepts the connection and never answers: --timeout 1 returns
    after about a second (still pending, exit 3), not after [delivery] http_timeout."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        conf = write_conf(tmp_path / "m.conf", hostname="h1", state_path=tmp_path / "state",
                          endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}/v1",
                          sections={"delivery": {"http_timeout": 30}})
        started = time.monotonic()
        r = cli(conf, "notify", "--type", "COMPUTE_HOST", "--payload",
                '{"event": "STOPPED"}', "--wait", "--timeout", "1")
        took = time.monotonic() - started
    finally:
        silent.close()
    assert r.returncode == 3, r.stderr
    assert "pending" in r.stdout
    assert took < 8, took  # CLI start-up (~2 s here) + 1 s, far below http_timeout 30


def test_purge_reads_a_naive_time_as_local_like_history_and_type_is_case_insensitive(
        tmp_path):
    """Under TZ=Asia/Tokyo (UTC+9), "one hour ago" written as a naive local time purges
    nothing delivered a minute ago (read as UTC, it would mean 8 h in the future and purge
    it); history --since reads the same text the same way. --type vm means VM."""
    import datetime as dt

    from monitors.notification import VM, Notification
    from monitors.outbox import Outbox
    from tests.helpers import BIN

    conf = write_conf(tmp_path / "m.conf", hostname="h1", state_path=tmp_path / "state",
                      endpoint="http://127.0.0.1:9/v1")
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    note = Notification.create(VM, "h1", {"event": "LIFECYCLE", "vir_domain_event":
                                          "STOPPED_FAILED",
                                          "instance_uuid": "0b8e3c59-1111-4222-8333-444455556666"})
    nid = box.put(note, source="t", drivers=["masakari"]).id
    claim = box.claim(["masakari"], 30)
    box.finish(claim, "delivered", status=202, remote_id="x")
    env = {**os.environ, "TZ": "Asia/Tokyo"}

    def run(*args):
        return subprocess.run([str(BIN / "ha-monitors"), "--config-file", str(conf), *args],
                              capture_output=True, text=True, timeout=60, env=env)

    tokyo = dt.timezone(dt.timedelta(hours=9))
    hour_ago = (dt.datetime.now(tokyo) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    r = run("history", "--since", hour_ago, "--json")
    assert r.returncode == 0 and [a["id"] for a in __import__("json").loads(r.stdout)] == [nid]
    r = run("outbox", "purge", "--delivered-before", hour_ago)
    assert r.returncode == 0 and "purged 0 " in r.stdout, r.stdout
    r = run("outbox", "list", "--type", "vm", "--state", "DELIVERED", "--json")
    assert r.returncode == 0 and [row["id"] for row in __import__("json").loads(r.stdout)] == [nid]
    r = run("outbox", "list", "--type", "vms")
    assert r.returncode == 2 and "invalid choice: 'VMS'" in r.stderr
    r = run("outbox", "purge", "--delivered-before", "0s")
    assert r.returncode == 0 and "purged 1 " in r.stdout, r.stdout
    box.close()
