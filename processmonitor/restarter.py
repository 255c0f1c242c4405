"""Restarting one entry's process, in that entry's own thread, and saying when it failed.

One worker per process-list entry, so a restart that hangs or retries for minutes never
delays another entry's. Commands run through monitors/command.py (no shell, bounded); a
command fails on a non-zero exit, a timeout or when it cannot be run at all — output on
stderr alone is not a failure. STOPPED is sent only when every attempt failed; STARTED
when a process reported STOPPED runs again.

"Does it run?" has one answer: what the watcher last pushed through ``observe`` (pidfd
exit, proc connector, scan). A restart waits on that push for ``grace`` seconds; it never
scans the process table itself (where the kernel cannot push, the watcher is asked to
scan instead).

A frozen process (processmonitor/freeze.py) is pushed as not running, with ``how``
saying why; the restart then first SIGKILLs the entry's frozen pids and waits up to
``freeze_kill_wait`` for them to exit, and goes on exactly as for a crash: same commands,
same retries, same single STOPPED when they do not help. An entry's ``liveness_command``
runs in this worker's thread while the process is up (never in the watcher's loop); when
it has failed for ``freeze_timeout`` seconds the process counts as frozen too.
"""
from __future__ import annotations

import logging
import os
import queue
import select
import threading
import time
from typing import Callable

from monitors import command, log
from monitors.notification import PROCESS, Notification

from processmonitor.process_list import ProcessEntry
from processmonitor.restart_policy import RestartPolicy
from processmonitor.verdict_file import GAVE_UP, RESTARTING as VERDICT_RESTARTING, RUNNING, \
    VerdictFile

LOG = logging.getLogger(__name__)

NEW, UP, RESTARTING, FAILED = "new", "up", "restarting", "failed"
FALLBACK_SCAN = 0.1  # without the proc connector: scan this often while a restart waits
LAST_LOOK = 5.0      # seconds the scan after a fruitless grace may take


class EntryWorker:
    """The state of one entry (new → up → restarting → up | failed) and its task loop
    (run in a thread its source spawns)."""

    def __init__(self, entry: ProcessEntry, policy: RestartPolicy, emit, watcher,
                 verdicts: VerdictFile):
        self.entry = entry
        self.policy = policy  # already resolved for this entry (policy.for_entry)
        self._emit = emit
        self._watcher = watcher
        self._verdicts = verdicts
        self.state = NEW
        self.running = False  # the watcher's last word: does a matching process run?
        self._scan_pushes = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified on every push and stop
        self._done = False
        self._tasks: queue.Queue = queue.Queue()
        self.thread: threading.Thread | None = None
        self.last_error = ""
        self._liveness_failing_since: float | None = None
        self._liveness_next = 0.0

    @property
    def name(self) -> str:
        return self.entry.payload_name

    # -- called by the watcher (any thread); must stay quick ------------------------------------
    def observe(self, running: bool, pid: int | None, how: str) -> None:
        with self._changed:
            self.running = running
            self._scan_pushes += how == "scan"
            self._changed.notify_all()
            if running:
                if self.state == FAILED:
                    self.state = UP
                    self._notify("STARTED", RUNNING, {"pid": pid, "seen_by": how})
                    self._tasks.put(("wake", None, how))  # liveness checks resume
                elif self.state == NEW:
                    self.state = UP
                    self._verdicts.set(self.name, RUNNING)
                return
            if self.state == UP:
                self.state = RESTARTING
                if how.startswith("frozen"):
                    log.event(LOG, logging.WARNING, "process %s (pid %s) is %s: killing and "
                              "restarting it", self.entry.process_name, pid, how,
                              fields={"PROCESS_NAME": self.entry.payload_name, "PID": pid,
                                      "DETECTED_BY": "frozen", "DECISION": "restart"})
                else:
                    log.event(LOG, logging.WARNING, "process %s is not running (%s, last "
                              "pid %s): restarting", self.entry.process_name, how, pid,
                              fields={"PROCESS_NAME": self.entry.payload_name, "PID": pid,
                                      "DETECTED_BY": how, "DECISION": "restart"})
                self._tasks.put(("restart", pid, how))

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, spawn: Callable[..., threading.Thread]) -> None:
        self.thread = spawn(self._loop, f"restart:{self.entry.process_name[:20]}")
        self._tasks.put(("start", None, "start-up"))

    def stop(self) -> None:
        with self._changed:
            self._done = True
            self._changed.notify_all()
        self._tasks.put(("stop", None, ""))

    def update(self, entry: ProcessEntry, policy: RestartPolicy) -> None:
        """A reload: applies from the next restart (one in progress keeps what it had)."""
        with self._lock:
            self.entry, self.policy = entry, policy

    # -- the worker thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._done:
            try:
                task, pid, how = self._tasks.get(timeout=self._liveness_due())
            except queue.Empty:
                task, pid, how = "liveness", None, ""
            try:
                if task == "liveness":
                    self._check_liveness()
                elif task == "start":
                    self._initial_start()
                elif task == "restart":
                    self._restart(pid, how)
            except Exception:  # noqa: BLE001 - one entry's bug never ends its thread
                LOG.exception("process %s: %s failed unexpectedly", self.entry.process_name,
                              task)

    def _liveness_due(self) -> float | None:
        """Seconds until the next liveness check (None: no check, wait for a task)."""
        with self._lock:
            entry, policy = self.entry, self.policy
            if not entry.liveness_command or policy.freeze_timeout <= 0 \
                    or self.state != UP or not self.running:
                self._liveness_failing_since = None
                return None
        return max(0.0, self._liveness_next - time.monotonic())

    def _check_liveness(self) -> None:
        """Run the liveness command once (bounded by command_timeout); after it failed for
        freeze_timeout seconds, tell the watcher the process is frozen (it pushes "not
        running" back, which starts the restart)."""
        with self._lock:
            entry, policy = self.entry, self.policy
        self._liveness_next = time.monotonic() + policy.liveness_interval
        result = command.run(entry.liveness_command, min(policy.command_timeout,
                                                         policy.freeze_timeout),
                             as_root=entry.run_as_root)
        now = time.monotonic()
        if result.ok:
            if self._liveness_failing_since is not None:
                LOG.info("process %s: liveness_command succeeds again", entry.process_name)
            self._liveness_failing_since = None
            return
        if self._liveness_failing_since is None:
            self._liveness_failing_since = now
            LOG.warning("process %s: liveness_command %r failed: %s (frozen if it keeps "
                        "failing for %gs)", entry.process_name,
                        " ".join(entry.liveness_command), result.detail,
                        policy.freeze_timeout)
        failing = now - self._liveness_failing_since
        if failing >= policy.freeze_timeout and self.state == UP:
            self._liveness_failing_since = None
            self._watcher.mark_frozen(entry.process_name,
                                      f"failing its liveness_command for {failing:.1f}s "
                                      f"(last: {result.detail})")

    def _kill_frozen(self, entry: ProcessEntry, policy: RestartPolicy) -> None:
        """SIGKILL the entry's frozen pids and wait (bounded) for them to exit, so the
        restart starts from a process that is gone, as after a crash. One still there
        after freeze_kill_wait (asleep in "D" on storage that never answers) is left to
        the kernel: the restart commands run anyway and may start a new process."""
        for pid, fd in self._watcher.kill_frozen(entry.process_name):
            try:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                if poller.poll(policy.freeze_kill_wait * 1000):
                    LOG.info("process %s: frozen pid %s killed (SIGKILL)",
                             entry.process_name, pid)
                else:
                    LOG.error("process %s: frozen pid %s still there %gs after SIGKILL "
                              "(stuck in the kernel); restarting anyway",
                              entry.process_name, pid, policy.freeze_kill_wait)
            finally:
                os.close(fd)

    def _initial_start(self) -> None:
        """Start commands only for a process that does not run yet (never for a running one)."""
        with self._lock:
            if self.state != NEW:
                return
            if self.running:
                self.state = UP
                self._verdicts.set(self.name, RUNNING)
                return
            entry, policy = self.entry, self.policy
        if "start_command" not in entry.commands:
            LOG.warning("process %s does not run and has no start_command: restarting it",
                        entry.process_name)
        else:
            LOG.info("process %s does not run: starting it", entry.process_name)
            ok, _ = self._sequence(entry, policy, ("pre_start_command", "start_command",
                                                   "post_start_command"))
            if ok and self._wait_running(policy):
                with self._lock:
                    if self.state == NEW:
                        self.state = UP
                        self._verdicts.set(self.name, RUNNING)
                return
            LOG.error("process %s did not start; going through the restart steps",
                      entry.process_name)
        with self._lock:
            if self.state != NEW:
                return
            self.state = RESTARTING
        self._restart(None, "not running at start-up")

    def _sequence(self, entry: ProcessEntry, policy: RestartPolicy, keys) -> tuple[bool, str]:
        for key in keys:
            argv = entry.command(key)
            if not argv:
                continue
            result = command.run(argv, policy.command_timeout, as_root=entry.run_as_root)
            if result.ok:
                LOG.info("process %s: %s %r %s (%.2fs)", entry.process_name, key,
                         " ".join(argv), result.detail, result.seconds)
            else:
                self.last_error = f"{key} {' '.join(argv)!r} {result.detail}"
                log.event(LOG, logging.ERROR, "process %s (%s:%s): %s %r failed: %s",
                          entry.process_name, "process list", entry.line, key,
                          " ".join(argv), result.detail,
                          fields={"PROCESS_NAME": entry.payload_name, "COMMAND": key})
                return False, f"{key}: {result.detail}"
        return True, "ok"

    def _wait(self, seconds: float) -> None:
        """Sleep between attempts; ends early when stopped or when the process runs."""
        with self._changed:
            self._changed.wait_for(lambda: self._done or self.running, seconds)

    def _wait_running(self, policy: RestartPolicy) -> bool:
        """After commands that succeeded: a matching process must be pushed as running
        within ``grace`` seconds."""
        deadline = time.monotonic() + policy.grace
        next_scan = time.monotonic() + FALLBACK_SCAN
        self._watcher.after_command()
        with self._changed:
            while not self.running:
                now = time.monotonic()
                if self._done:
                    return False
                if now >= deadline:
                    return self._last_look()
                if self._watcher.proc_connector:
                    self._changed.wait(deadline - now)
                elif now >= next_scan:  # nothing pushes new processes here
                    next_scan = now + FALLBACK_SCAN
                    self._watcher.request_scan()
                else:
                    self._changed.wait(min(deadline, next_scan) - now)
            return True

    def _last_look(self) -> bool:
        """Grace is over and nothing was pushed: one scan (the safety net) before this
        attempt counts as failed, for what no event shows (e.g. a process that renamed
        itself after exec). Caller holds the lock."""
        seen = self._scan_pushes
        self._watcher.request_scan()
        self._changed.wait_for(lambda: self.running or self._done
                               or self._scan_pushes != seen, LAST_LOOK)
        return self.running and not self._done

    def _restart(self, pid, how: str) -> None:
        with self._lock:
            entry, policy = self.entry, self.policy
        self._verdicts.set(self.name, VERDICT_RESTARTING)
        self._kill_frozen(entry, policy)
        attempts: list[str] = []
        for attempt in range(policy.retries + 1):
            if self._done:
                return
            if self.running:
                LOG.info("process %s runs again; no restart needed", entry.process_name)
                self._up()
                return
            if "restart_command" not in entry.commands:
                attempts.append("no restart_command")
                break
            ok, detail = self._sequence(entry, policy, ("pre_restart_command",
                                                        "restart_command",
                                                        "post_restart_command"))
            if ok and not self._wait_running(policy):
                ok, detail = False, (f"commands succeeded but no matching process ran "
                                     f"within {policy.grace:g}s")
                self.last_error = detail
                log.event(LOG, logging.ERROR, "process %s: %s", entry.process_name, detail,
                          fields={"PROCESS_NAME": entry.payload_name})
            if ok:
                log.event(LOG, logging.INFO, "process %s restarted (attempt %s of %s)",
                          entry.process_name, attempt + 1, policy.retries + 1,
                          fields={"PROCESS_NAME": entry.payload_name, "DECISION": "restarted"})
                self._up()
                return
            attempts.append(detail)
            if attempt < policy.retries:
                self._wait(policy.interval)
        with self._lock:
            if self.state != RESTARTING or self._done:  # stopping is no failed restart
                return
            self.state = FAILED
            self._notify("STOPPED", GAVE_UP, {"last_pid": pid, "detected_by": how,
                                              "attempts": attempts})

    def _up(self) -> None:
        with self._lock:
            self.state = UP
            self._verdicts.set(self.name, RUNNING)

    def _notify(self, event: str, verdict: str, decision: dict) -> None:
        """Queue PROCESS STOPPED/STARTED (caller holds the lock; emit is one SQLite write).
        The verdict it carries is written once the row is durable, with the row's id."""
        entry = self.entry
        name = self.name
        notification = Notification.create(
            PROCESS, self.policy.hostname, {"event": event, "process_name": name})

        def stored(result) -> None:  # the backlog's thread when it was held in memory
            self._verdicts.stored(name, verdict, getattr(result, "id", None))

        self._verdicts.expect(name)
        try:
            result = self._emit(notification, decision={"process_name": entry.process_name,
                                                        "process_list_line": entry.line,
                                                        **decision}, on_stored=stored)
        except Exception:  # noqa: BLE001
            self._verdicts.dropped(name)
            LOG.exception("process %s: could not queue %s", entry.process_name, event)
            return
        if result is not None and result.id is None and not getattr(result, "held", False):
            self._verdicts.dropped(name)  # refused: the memory backlog is full
