"""Restarting one entry's process, in that entry's own thread, and saying when it failed.

One worker thread per process-list entry, so a restart that hangs or retries for minutes
never delays another entry's. Commands run without a shell (already split with shlex),
each with a timeout; a command fails on a non-zero exit, a timeout or when it cannot be
run at all — output on stderr alone is not a failure. STOPPED is sent only when every
attempt failed; STARTED when a process reported STOPPED runs again.
"""
from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from typing import Callable

from monitors import log
from monitors.notification import PROCESS, Notification

from processmonitor.process_list import ProcessEntry

LOG = logging.getLogger(__name__)

NEW, UP, RESTARTING, FAILED = "new", "up", "restarting", "failed"


def _tail(f, limit: int = 400) -> str:
    f.seek(0)
    text = f.read().decode("utf-8", "replace").strip()
    return text[-limit:]


def run_command(argv: list[str], timeout: float, run_as_root: bool = False) -> tuple[bool, str]:
    """Run ``argv`` (no shell); (succeeded, what happened). Output goes to temporary files,
    not pipes, so a daemon the command leaves behind cannot keep us waiting for EOF."""
    if run_as_root and os.geteuid() != 0:
        argv = ["sudo", "-n", *argv]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True, close_fds=True)
        except OSError as exc:
            return False, f"cannot run: {exc.strerror or exc}"
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                proc.kill()
            proc.wait()
            return False, f"timed out after {timeout:g}s (killed)"
        stderr = _tail(err)
        if rc != 0:
            detail = f"exited with status {rc}" if rc > 0 else f"killed by signal {-rc}"
            return False, detail + (f"; stderr: {stderr}" if stderr else "")
        return True, "ok" + (f"; stderr: {stderr}" if stderr else "")


class EntryWorker:
    """The state of one entry (new → up → restarting → up | failed) and its thread."""

    def __init__(self, entry: ProcessEntry, settings: Callable[[], dict], emit,
                 watcher, hostname: Callable[[], str]):
        self.entry = entry
        self._settings = settings  # -> retries, interval, command_timeout, restart_grace
        self._emit = emit
        self._watcher = watcher
        self._hostname = hostname
        self.state = NEW
        self._lock = threading.Lock()
        self._tasks: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"restart:{entry.process_name[:20]}")
        self.last_error = ""

    # -- called by the watcher (any thread); must stay quick ------------------------------------
    def observe(self, running: bool, pid: int | None, how: str) -> None:
        with self._lock:
            if running:
                if self.state == FAILED:
                    self.state = UP
                    self._notify("STARTED", {"pid": pid, "seen_by": how})
                elif self.state == NEW:
                    self.state = UP
                return
            if self.state == UP:
                self.state = RESTARTING
                log.event(LOG, logging.WARNING, "process %s is not running (%s, last pid %s): "
                          "restarting", self.entry.process_name, how, pid,
                          fields={"PROCESS_NAME": self.entry.payload_name, "PID": pid,
                                  "DETECTED_BY": how, "DECISION": "restart"})
                self._tasks.put(("restart", pid, how))

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._tasks.put(("start", None, "start-up"))

    def stop(self) -> None:
        self._stop.set()
        self._tasks.put(("stop", None, ""))

    def update(self, entry: ProcessEntry) -> None:
        self.entry = entry

    # -- the worker thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            task, pid, how = self._tasks.get()
            try:
                if task == "start":
                    self._initial_start()
                elif task == "restart":
                    self._restart(pid, how)
            except Exception:  # noqa: BLE001 - one entry's bug never ends its thread
                LOG.exception("process %s: %s failed unexpectedly", self.entry.process_name,
                              task)

    def _running(self) -> bool:
        return bool(self._watcher.running(self.entry.process_name))

    def _initial_start(self) -> None:
        """Start commands only for a process that does not run yet (never for a running one)."""
        with self._lock:
            if self.state != NEW:
                return
        if self._running():
            with self._lock:
                self.state = UP
            return
        entry = self.entry
        if "start_command" not in entry.commands:
            LOG.warning("process %s does not run and has no start_command: restarting it",
                        entry.process_name)
        else:
            LOG.info("process %s does not run: starting it", entry.process_name)
            ok, _ = self._sequence(("pre_start_command", "start_command", "post_start_command"))
            if ok and self._wait_running():
                with self._lock:
                    self.state = UP
                return
            LOG.error("process %s did not start; going through the restart steps",
                      entry.process_name)
        with self._lock:
            if self.state != NEW:
                return
            self.state = RESTARTING
        self._restart(None, "not running at start-up")

    def _sequence(self, keys) -> tuple[bool, str]:
        entry = self.entry
        timeout = self._settings()["command_timeout"]
        for key in keys:
            argv = entry.command(key)
            if not argv:
                continue
            started = time.monotonic()
            ok, detail = run_command(argv, timeout, entry.run_as_root)
            took = time.monotonic() - started
            if ok:
                LOG.info("process %s: %s %r %s (%.2fs)", entry.process_name, key,
                         " ".join(argv), detail, took)
            else:
                self.last_error = f"{key} {' '.join(argv)!r} {detail}"
                log.event(LOG, logging.ERROR, "process %s (%s:%s): %s %r failed: %s",
                          entry.process_name, "process list", entry.line, key,
                          " ".join(argv), detail,
                          fields={"PROCESS_NAME": entry.payload_name, "COMMAND": key})
                return False, f"{key}: {detail}"
        return True, "ok"

    def _wait_running(self) -> bool:
        """After commands that succeeded: the process must show up within restart_grace."""
        deadline = time.monotonic() + self._settings()["restart_grace"]
        self._watcher.request_scan()
        while True:
            if self._running():
                return True
            if time.monotonic() >= deadline or self._stop.is_set():
                return False
            self._stop.wait(0.05)
            self._watcher.request_scan()

    def _restart(self, pid, how: str) -> None:
        entry = self.entry
        settings = self._settings()
        retries = entry.restart_retries if entry.restart_retries is not None \
            else settings["restart_retries"]
        interval = entry.restart_interval if entry.restart_interval is not None \
            else settings["restart_interval"]
        attempts: list[str] = []
        for attempt in range(retries + 1):
            if self._stop.is_set():
                return
            if self._running():
                LOG.info("process %s runs again; no restart needed", entry.process_name)
                with self._lock:
                    self.state = UP
                return
            if "restart_command" not in entry.commands:
                attempts.append("no restart_command")
                break
            ok, detail = self._sequence(("pre_restart_command", "restart_command",
                                         "post_restart_command"))
            if ok and not self._wait_running():
                ok, detail = False, (f"commands succeeded but no matching process ran "
                                     f"within {settings['restart_grace']:g}s")
                self.last_error = detail
                log.event(LOG, logging.ERROR, "process %s: %s", entry.process_name, detail,
                          fields={"PROCESS_NAME": entry.payload_name})
            if ok:
                log.event(LOG, logging.INFO, "process %s restarted (attempt %s of %s)",
                          entry.process_name, attempt + 1, retries + 1,
                          fields={"PROCESS_NAME": entry.payload_name, "DECISION": "restarted"})
                with self._lock:
                    self.state = UP
                return
            attempts.append(detail)
            if attempt < retries:
                self._stop.wait(interval)
        with self._lock:
            if self.state != RESTARTING:
                return
            self.state = FAILED
            self._notify("STOPPED", {"last_pid": pid, "detected_by": how,
                                     "attempts": attempts})

    def _notify(self, event: str, decision: dict) -> None:
        """Queue PROCESS STOPPED/STARTED (caller holds the lock; emit is one SQLite write)."""
        entry = self.entry
        notification = Notification.create(
            PROCESS, self._hostname(), {"event": event, "process_name": entry.payload_name})
        try:
            self._emit(notification, decision={"process_name": entry.process_name,
                                               "process_list_line": entry.line, **decision})
        except Exception:  # noqa: BLE001
            LOG.exception("process %s: could not queue %s", entry.process_name, event)
