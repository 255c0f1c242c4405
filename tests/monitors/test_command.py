"""monitors/command.py, the one runner of operator commands, on real processes: no shell,
a bound that kills the whole process group, output captured and quoted, clear errors."""
from __future__ import annotations

import os
import time

import pytest

from monitors import command


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_success_with_stderr_is_success_and_quotes_it():
    r = command.run(["sh", "-c", "echo out; echo warn >&2"], timeout=5)
    assert r.ok and r.returncode == 0
    assert r.detail == "ok; stderr: warn"
    assert r.stdout == "out\n" and r.stderr == "warn\n"
    assert r.check() is r


def test_failure_names_the_status_and_the_stderr_tail():
    r = command.run(["sh", "-c", "echo cannot restart nova >&2; exit 3"], timeout=5)
    assert not r.ok and r.returncode == 3
    assert r.detail == "exited with status 3; stderr: cannot restart nova"
    with pytest.raises(command.CommandError) as err:
        r.check()
    assert str(err.value) == ("sh -c 'echo cannot restart nova >&2; exit 3': exited "
                              "with status 3; stderr: cannot restart nova")


def test_no_shell_an_argument_is_never_interpreted(tmp_path):
    marker = tmp_path / "marker"
    r = command.run(["echo", f"; touch {marker}", "$(id)"], timeout=5)
    assert r.ok and r.stdout == f"; touch {marker} $(id)\n"
    assert not marker.exists()


def test_missing_program_is_a_clear_error_not_an_exception():
    r = command.run(["/no/such/program", "x"], timeout=5)
    assert not r.ok and r.returncode is None
    assert r.detail == "cannot run: No such file or directory"


def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "child"
    started = time.monotonic()
    r = command.run(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"], timeout=0.5)
    assert time.monotonic() - started < 5
    assert not r.ok and r.timed_out and r.returncode is None
    assert r.detail == "timed out after 0.5s (killed)"
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(child), "the command's child outlived the bound"


def test_a_daemon_left_holding_the_output_does_not_block():
    """A restart command that starts a daemon keeping stdout/stderr open returns as soon as
    the command itself exits (files, not pipes)."""
    started = time.monotonic()
    r = command.run(["sh", "-c", "setsid sleep 3 & echo started"], timeout=10)
    assert r.ok and r.stdout == "started\n"
    assert time.monotonic() - started < 2.5


def test_signal_and_merged_output():
    r = command.run(["sh", "-c", "echo to-out; echo to-err >&2; kill -9 $$"], timeout=5,
                    merge_output=True)
    assert not r.ok and r.returncode == -9
    assert r.detail == "killed by signal 9; output: to-out\nto-err"
    assert r.stderr == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="as_root is a no-op only for root")
def test_as_root_is_a_no_op_for_root():
    r = command.run(["id", "-u"], timeout=5, as_root=True)
    assert r.argv == ("id", "-u") and r.stdout == "0\n"
