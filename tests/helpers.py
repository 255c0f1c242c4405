"""Helpers for tests that run the daemons and the CLI as real processes."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

BIN = Path(sys.executable).parent


def write_conf(path: Path, *, hostname: str, state_path: Path, endpoint: str | None,
               sections: dict[str, dict[str, object]] | None = None) -> Path:
    """A config file as an operator writes it: [api] with auth_type none + endpoint."""
    groups: dict[str, dict[str, object]] = {
        "DEFAULT": {"hostname": hostname, "state_path": state_path, "debug": "true"},
        "api": {"auth_type": "none", "endpoint": endpoint or "http://127.0.0.1:9/v1"},
        "delivery": {"retry_initial_interval": 0.1, "retry_max_interval": 0.5,
                     "http_timeout": 5, "idle_poll_interval": 0.2},
    }
    for group, opts in (sections or {}).items():
        groups.setdefault(group, {}).update(opts)
    lines = []
    for group, opts in groups.items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in opts.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def recovery_conf(state_dir: Path, api, **nova):
    """In-process configuration of the recovery loop's drivers: [api] to the real
    masakari-api (no Keystone), [nova] password auth against the recording stand-in's
    Keystone, the compute endpoint from its catalog (as in production); ``nova`` sets
    [nova] options (force_down, resurrect ...). Quick retries for tests."""
    from keystoneauth1 import loading as ks_loading

    from monitors import config

    conf = config.new_conf()
    conf([], project="x", default_config_files=[])
    conf.set_override("state_path", str(Path(state_dir) / "state"))
    conf.set_override("auth_type", "none", group="api")
    ks_loading.load_auth_from_conf_options(conf, "api")  # registers the 'none' options
    conf.set_override("endpoint", api.endpoint, group="api")
    conf.register_opts(ks_loading.get_auth_plugin_conf_options("password"), group="nova")
    for key, value in {"auth_type": "password", "auth_url": api.stub.auth_url,
                       "username": "monitors", "password": "secret",
                       "project_name": "service", "user_domain_name": "Default",
                       "project_domain_name": "Default", **nova}.items():
        conf.set_override(key, value, group="nova")
    for key, value in {"retry_initial_interval": 0.2, "retry_max_interval": 1.0,
                       "held_retry_interval": 1.0,
                       "http_timeout": 10, "idle_poll_interval": 0.05}.items():
        conf.set_override(key, value, group="delivery")
    return conf


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> int | None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; the exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class NotifySocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="notify-")
        # removed when closed, collected or at exit, whichever comes first
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.dir, True)
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[dict[str, str]] = []

    def drain(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, BlockingIOError):
                return self.messages
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()
                                      if "=" in line))

    def wait_for(self, key: str, timeout: float = 20.0) -> dict[str, str]:
        def found():
            self.drain()
            return next((m for m in self.messages if key in m), None)
        return wait_for(found, timeout, what=f"sd_notify {key}")

    def close(self):
        self.sock.close()
        self._cleanup()


# A PID namespace of its own, as a container has (mount namespace too, for its /proc);
# the file system (state_path, NOTIFY_SOCKET) and the network stay shared.
PID_NAMESPACE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]


class Daemon:
    """One of our daemons as a real child process with its own NOTIFY_SOCKET.

    pid_namespace: run it as PID 1 of a PID namespace of its own (one container per
    monitor); kill() and stop() then signal the daemon, not the unshare around it."""

    def __init__(self, name: str, conf: Path, env: dict | None = None, log: Path | None = None,
                 argv_prefix: list[str] | None = None, argv: list[str] | None = None,
                 pid_namespace: bool = False):
        self.pid_namespace = pid_namespace
        if pid_namespace:
            argv_prefix = [*PID_NAMESPACE, *(argv_prefix or [])]
        self.name = name
        self.conf = conf
        self.notify = NotifySocket()
        self.log = log or conf.with_suffix(f".{name}.log")
        self.env = {**os.environ, "NOTIFY_SOCKET": self.notify.path, **(env or {})}
        self.argv_prefix = argv_prefix or []
        self.argv = argv or [str(BIN / f"ha-{name}"), "--config-file", str(conf)]
        self.proc: subprocess.Popen | None = None

    def start(self, wait_ready: bool = True) -> "Daemon":
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [*self.argv_prefix, *self.argv],
            env=self.env, stdout=self._logf, stderr=subprocess.STDOUT)
        if wait_ready:
            try:
                self.notify.wait_for("READY", timeout=30)
            except AssertionError:
                raise AssertionError(f"ha-{self.name} not ready; log:\n{self.log_text()[-3000:]}")
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def pid(self) -> int:
        """The daemon's pid as the test sees it (inside a PID namespace it is 1 there)."""
        if not self.pid_namespace:
            return self.proc.pid
        path = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
        found = wait_for(lambda: Path(path).read_text().split(), 10,
                         what="the daemon forked by unshare")
        return int(found[0])

    def signal(self, signo: int) -> None:
        if self.pid_namespace:
            os.kill(self.pid, signo)
        else:
            self.proc.send_signal(signo)

    def stop(self, timeout: float = 15.0) -> int | None:
        if not self.pid_namespace or self.proc is None or self.proc.poll() is not None:
            return stop_process(self.proc, timeout)
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL (the daemon itself; in a PID namespace that ends the namespace)."""
        if self.proc and self.proc.poll() is None:
            if self.pid_namespace:
                os.kill(self.pid, signal.SIGKILL)
            else:
                self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        self.notify.close()


def deliverer(conf: Path, **kwargs) -> Daemon:
    """`ha-monitors deliver`: the delivery worker alone, under the daemon runtime."""
    return Daemon("delivery", conf, argv=[str(BIN / "ha-monitors"), "--config-file", str(conf),
                                          "deliver"], **kwargs)


def cli(conf: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ha-monitors"), "--config-file", str(conf), *args],
                          capture_output=True, text=True, timeout=timeout)
