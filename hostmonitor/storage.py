"""Storage path checks; a hung mount must never hang the daemon.

Mount checks (a stat, optionally a heartbeat write+read) run in a child process that is
killed and abandoned after ``storage_check_timeout``: a process stuck in a hung NFS/FUSE
call cannot be interrupted from inside, but the daemon only waits on a pipe with a
timeout. While an abandoned child is still stuck, the path is not checked again (no
pile-up of stuck children) and stays down. iSCSI and FC states are sysfs reads; multipath
path counts come from ``multipathd show paths`` (with the same timeout) when present.
There is no event for "the NFS server stopped answering", so storage is checked
periodically (``storage_check_interval``).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from hostmonitor.links import DEGRADED, DOWN, UP, combine

LOG = logging.getLogger(__name__)

# The child: stat the path, optionally write, fsync and read back a heartbeat file.
# The mount may be shared (NFS) and we run as root: a symlink planted at the heartbeat's
# name must never make us write through it. So: a fresh temporary file (O_EXCL|O_NOFOLLOW,
# never an existing one), renamed over the name (rename replaces a symlink, it does not
# follow it), read back with O_NOFOLLOW.
_CHILD = r"""
import os, sys, time
path, beat = sys.argv[1], sys.argv[2]
os.stat(path)
os.statvfs(path)  # never answered from a cache (NFS, FUSE)
if beat:
    data = ("%f\n" % time.time()).encode()
    tmp = "%s.%d.tmp" % (beat, os.getpid())
    try:
        os.unlink(tmp)  # a leftover of a killed check (unlink never follows a symlink)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data); os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, beat)
    fd = os.open(beat, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if os.read(fd, 4096) != data:
            sys.exit(3)
    finally:
        os.close(fd)
"""


@dataclasses.dataclass
class Result:
    name: str
    state: str
    detail: str


class MountCheck:
    def __init__(self, path: str, timeout: float, heartbeat_file: str | None):
        self.path = path
        self.timeout = timeout
        self.heartbeat_file = heartbeat_file
        self.stuck: subprocess.Popen | None = None

    def run(self) -> Result:
        name = f"mount {self.path}"
        if self.stuck is not None:
            if self.stuck.poll() is None:
                return Result(name, DOWN, f"previous check (pid {self.stuck.pid}) still "
                                          "stuck in the kernel")
            self.stuck = None
        beat = os.path.join(self.path, self.heartbeat_file) if self.heartbeat_file else ""
        started = time.monotonic()
        try:
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _CHILD, self.path, beat],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, close_fds=True)
        except OSError as exc:
            return Result(name, DOWN, f"cannot start the check: {exc}")
        try:
            _, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # a FUSE wait dies now; an NFS 'D' wait only later: abandoned
            try:
                proc.wait(0.2)
            except subprocess.TimeoutExpired:
                self.stuck = proc
            return Result(name, DOWN, f"no answer within {self.timeout:g}s (hung mount?)")
        took = time.monotonic() - started
        if proc.returncode != 0:
            last = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            return Result(name, DOWN, f"check failed (rc {proc.returncode}): {last[0][:200]}")
        return Result(name, UP, f"ok in {took * 1000:.0f} ms")


class SysfsCheck:
    """iSCSI sessions or FC hosts: every named one must be in its good state."""

    def __init__(self, kind: str, names: list[str], sysfs_root: str):
        self.kind = kind
        self.names = names
        if kind == "iscsi":
            self.base = os.path.join(sysfs_root, "class/iscsi_session")
            self.attr, self.good = "state", "LOGGED_IN"
        else:
            self.base = os.path.join(sysfs_root, "class/fc_host")
            self.attr, self.good = "port_state", "Online"

    def _read(self, *parts) -> str | None:
        try:
            with open(os.path.join(self.base, *parts), encoding="utf-8") as f:
                return f.read().strip()
        except OSError:
            return None

    def _entry(self, name: str) -> str | None:
        if os.path.isdir(os.path.join(self.base, name)):
            return name
        if self.kind == "iscsi":  # a target IQN instead of a session name
            try:
                entries = os.listdir(self.base)
            except OSError:
                return None
            return next((e for e in entries if self._read(e, "targetname") == name), None)
        return None

    def run(self) -> Result:
        states, bad = [], []
        for name in self.names:
            entry = self._entry(name)
            value = self._read(entry, self.attr) if entry else None
            ok = value == self.good
            states.append(UP if ok else DOWN)
            if not ok:
                bad.append(f"{name}={value or 'missing'}")
        detail = "all " + self.good if not bad else ", ".join(bad)
        return Result(self.kind, combine(states), detail)


class MultipathCheck:
    def __init__(self, devices: list[str], timeout: float):
        self.devices = devices
        self.timeout = timeout

    def run(self) -> Result:
        exe = shutil.which("multipathd")
        if exe is None:
            return Result("multipath", DOWN, "multipathd not installed")
        try:
            out = subprocess.run([exe, "show", "paths", "raw", "format", "%m %t"],
                                 capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return Result("multipath", DOWN, f"multipathd: no answer in {self.timeout:g}s")
        except OSError as exc:
            return Result("multipath", DOWN, f"multipathd: {exc}")
        paths: dict[str, list[bool]] = {}
        for line in out.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                paths.setdefault(parts[0], []).append(parts[1] == "active")
        states, notes = [], []
        for dev in self.devices:
            p = paths.get(dev, [])
            active = sum(p)
            states.append(UP if p and active == len(p) else DEGRADED if active else DOWN)
            notes.append(f"{dev} {active}/{len(p)} active")
        return Result("multipath", _worst(states), ", ".join(notes))


def _worst(states: list[str]) -> str:
    return DOWN if DOWN in states else DEGRADED if DEGRADED in states else UP


class StorageChecks:
    """All configured storage checks; ``run()`` gives (state, results)."""

    def __init__(self, conf):
        hm = conf.hostmonitor
        beat = f".ha-hostmonitor-{conf.hostname}" if hm.storage_heartbeat else None
        self.checks: list = [MountCheck(p, hm.storage_check_timeout, beat)
                             for p in hm.storage_paths]
        if hm.iscsi_sessions:
            self.checks.append(SysfsCheck("iscsi", list(hm.iscsi_sessions), hm.sysfs_root))
        if hm.fc_hosts:
            self.checks.append(SysfsCheck("fc", list(hm.fc_hosts), hm.sysfs_root))
        if hm.multipath_devices:
            self.checks.append(MultipathCheck(list(hm.multipath_devices),
                                              hm.storage_check_timeout))

    def __bool__(self) -> bool:
        return bool(self.checks)

    def run(self) -> tuple[str, list[Result]]:
        # in parallel: two hung mounts cost one timeout, not two
        if len(self.checks) == 1:
            results = [self.checks[0].run()]
        else:
            with ThreadPoolExecutor(len(self.checks), thread_name_prefix="hm-check") as pool:
                results = list(pool.map(lambda c: c.run(), self.checks))
        # a hung mount or a lost path group is storage down, whatever the links say
        return _worst([r.state for r in results]), results
