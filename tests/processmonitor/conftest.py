"""Helpers for processmonitor tests: stand-in processes with unique command lines, a
process list writer and a running ha-processmonitor against the real masakari-api."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.helpers import Daemon, wait_for, write_conf

BIN = Path(__file__).parent / "bin"


class Standins:
    """Stand-in services started by the test (detached, as a service manager would)."""

    def __init__(self):
        self.tag = uuid.uuid4().hex[:8]
        self.procs: list[subprocess.Popen] = []

    def name(self, program: str, label: str = "") -> str:
        """The process_name that matches exactly this test's stand-in (substring match)."""
        return f"{program} {self.tag}{label}."

    def argv(self, program: str, label: str = "") -> list[str]:
        return [str(BIN / program), f"{self.tag}{label}."]

    def start(self, program: str, label: str = "") -> int:
        proc = subprocess.Popen(self.argv(program, label), start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        wait_for(lambda: self.pids(program, label), 10, what=f"{program} running")
        return proc.pid

    def pids(self, program: str, label: str = "") -> list[int]:
        """Live (not zombie) pids of the stand-in, wherever it was started from."""
        want = f"{program} {self.tag}{label}".encode()  # label "" = all of this test's
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    line = f.read().replace(b"\0", b" ")
                with open(f"/proc/{entry}/stat", "rb") as f:
                    state = f.read().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if want in line and state != b"Z" and b"/bin/sh" not in line.split(b" ")[0]:
                found.append(int(entry))
        return found

    def kill(self, program: str, label: str = "", sig=signal.SIGKILL) -> list[int]:
        pids = self.pids(program, label)
        for pid in pids:
            os.kill(pid, sig)
        return pids

    def cleanup(self):
        for prog in ("fake-nova-compute", "fake-libvirtd"):
            for pid in self.pids(prog, ""):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        for proc in self.procs:
            proc.poll()


def spawn(stamp: Path, program: str, standins: Standins, label: str = "",
          delay: float = 0) -> str:
    """A restart/start command line that records its run and starts the stand-in."""
    return " ".join([str(BIN / "spawn"), str(stamp), str(delay),
                     *standins.argv(program, label)])


def fail(stamp: Path, what: str = "x") -> str:
    return f"{BIN / 'fail'} {stamp} {what}"


def stamps(path: Path, kind: str | None = None) -> list[tuple[str, float, str]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        k, t, *rest = line.split(" ", 2)
        if kind is None or k == kind:
            rows.append((k, float(t), rest[0] if rest else ""))
    return rows


def write_list(path: Path, entries: list[dict]) -> Path:
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    return path


@pytest.fixture
def standins():
    s = Standins()
    yield s
    s.cleanup()


@pytest.fixture
def pm(tmp_path, masakari_api, host, standins):
    """Start ha-processmonitor on a process list: pm(entries, **process_opts). Depends on
    `standins` so the daemon is stopped before the stand-ins are cleaned up."""
    daemons = []

    def run(entries, process=None, processmonitor=None, raw_list: str | None = None,
            sections=None, argv_prefix=None):
        plist = tmp_path / "process_list.yaml"
        if raw_list is not None:
            plist.write_text(raw_list)
        else:
            write_list(plist, entries)
        conf = write_conf(
            tmp_path / "monitors.conf", hostname=host, state_path=tmp_path,
            endpoint=masakari_api.endpoint,
            sections={"process": {"process_list_path": plist, "check_interval": 2,
                                  "restart_retries": 0, "restart_interval": 0,
                                  **(process or {})},
                      "processmonitor": {"command_timeout": 5, "restart_grace": 2,
                                         **(processmonitor or {})}, **(sections or {})})
        daemon = Daemon("processmonitor", conf, argv_prefix=argv_prefix).start()
        daemon.plist = plist
        daemons.append(daemon)
        return daemon

    yield run
    for d in daemons:
        d.stop()
        d.notify.close()


def process_notifications(api, host, event=None):
    rows = api.notifications(type="PROCESS", hostname=host)
    return [r for r in rows if event is None or r["payload"].get("event") == event]


def wait_notification(api, host, event, count=1, timeout=15):
    return wait_for(lambda: (lambda r: r if len(r) >= count else None)(
        process_notifications(api, host, event)), timeout, interval=0.2,
        what=f"{count} PROCESS {event} stored by the API")


def outbox_rows(daemon, type="PROCESS"):
    """The outbox as `ha-monitors outbox list --json` shows it."""
    import json

    from tests.helpers import cli
    r = cli(daemon.conf, "outbox", "list", "--json", "--type", type)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def verdict(state_path, name):
    """processmonitor's verdict on ``name`` in its verdict file (what hostmonitor reads)."""
    from monitors import process_verdicts
    return process_verdicts.read(str(state_path)).get(name, {})


def wait_log(daemon, text, timeout=10):
    return wait_for(lambda: text in daemon.log_text(), timeout, interval=0.1,
                    what=f"log line {text!r}")


__all__ = ["BIN", "Standins", "fail", "spawn", "stamps", "wait_for", "wait_log",
           "wait_notification", "process_notifications", "outbox_rows", "verdict", "time"]
