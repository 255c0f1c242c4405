"""The processmonitor source (entry point ``processes``): the process list, the watcher
and one restart worker per entry, on the source kit.

The watcher pushes "runs / does not run" to the entry's worker; the worker restarts and
emits PROCESS STOPPED/STARTED and writes the verdicts hostmonitor reads. The restart policy
is a frozen value resolved from the configuration here, at start and on each reload.
"""
from __future__ import annotations

import logging

from monitors.source import Health, Source

from processmonitor import process_list
from processmonitor.restart_policy import RestartPolicy
from processmonitor.restarter import FAILED, EntryWorker
from processmonitor.verdict_file import VerdictFile
from processmonitor.watcher import Watcher

LOG = logging.getLogger(__name__)


def load_list(conf) -> process_list.ProcessList:
    """Load and log the list; ProcessListError when the file itself is unusable."""
    plist = process_list.load(conf.process.process_list_path, conf.hostname)
    for warning in plist.warnings:
        LOG.warning("process list: %s", warning)
    for error in plist.errors:
        LOG.error("process list: %s", error)
    return plist


class ProcessesSource(Source):
    name = "processes"

    def __init__(self, conf, emit):
        super().__init__(conf, emit)
        self.plist = load_list(conf)
        self.policy = RestartPolicy.from_conf(conf)
        self.verdicts = VerdictFile(conf.state_path)
        self.workers: dict[str, EntryWorker] = {}
        self.watcher = Watcher(self.plist.entries, conf.process.check_interval,
                               self._on_change, conf.processmonitor.proc_connector,
                               conf.processmonitor.freeze_timeout,
                               conf.processmonitor.freeze_check_interval)
        self._watcher_thread = None

    def _on_change(self, name: str, running: bool, pid, how: str) -> None:
        worker = self.workers.get(name)
        if worker is not None:
            worker.observe(running, pid, how)
        if how == "scan":
            self.verdicts.retry()  # a verdict the disk refused earlier

    def _worker(self, entry) -> EntryWorker:
        return EntryWorker(entry, self.policy.for_entry(entry), self.emit, self.watcher,
                           self.verdicts)

    def start(self) -> None:
        for entry in self.plist.entries:
            self.workers[entry.process_name] = self._worker(entry)
        self.watcher.open()  # the first scan marks the running entries up
        self._watcher_thread = self.spawn(self.watcher.loop, "process-watcher",
                                          lambda: self.stopping)
        for worker in self.workers.values():
            worker.start(self.spawn)
        LOG.info("watching %d process(es) of %s: %d pid(s); proc connector %s",
                 len(self.workers), self.plist.path, self.watcher.watched(),
                 "on" if self.watcher.proc_connector else "off (scan only)")
        self._warn_if_empty()

    def _warn_if_empty(self) -> None:
        if not self.workers:
            LOG.warning("the process list %s names no process: nothing is watched",
                        self.plist.path)

    def threads(self) -> list:
        """The watcher and each watched entry's restart thread must stay alive (watchdog);
        the thread of an entry a reload removed ends, and is not counted."""
        out = [w.thread for w in self.workers.values() if w.thread is not None]
        return out + ([self._watcher_thread] if self._watcher_thread else [])

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        for worker in self.workers.values():
            worker.stop()
        self.watcher.wake()
        super().stop(timeout)
        self.watcher.close()

    def reload(self, new_conf) -> None:
        plist = load_list(new_conf)  # ProcessListError is a ValueError: old list stays
        if plist.errors:
            raise ValueError(f"{len(plist.errors)} invalid entr"
                             f"{'y' if len(plist.errors) == 1 else 'ies'} in "
                             f"{plist.path}: {plist.errors[0]}")
        self.conf = new_conf
        self.policy = RestartPolicy.from_conf(new_conf)
        self.watcher.check_interval = new_conf.process.check_interval
        self.watcher.freeze_timeout = new_conf.processmonitor.freeze_timeout
        self.watcher.freeze_check_interval = new_conf.processmonitor.freeze_check_interval
        new = {e.process_name: e for e in plist.entries}
        for name in list(self.workers):
            if name not in new:
                self.workers.pop(name).stop()
                LOG.info("process list: %s no longer watched", name)
        added = []
        for name, entry in new.items():
            if name in self.workers:
                self.workers[name].update(entry, self.policy.for_entry(entry))
            else:
                self.workers[name] = self._worker(entry)
                added.append(self.workers[name])
        self.plist = plist
        self.watcher.set_entries(plist.entries)
        self._threads = [t for t in self._threads if t.is_alive()]  # removed entries'
        for worker in added:
            worker.start(self.spawn)
        LOG.info("process list reloaded: %d process(es)", len(self.workers))
        self._warn_if_empty()

    def health(self) -> Health:
        failed = [n for n, w in self.workers.items() if w.state == FAILED]
        watcher = self.watcher
        detail = (f"{len(self.workers)} process(es), {watcher.watched()} pid(s) watched, "
                  f"proc connector {'on' if watcher.proc_connector else 'off'}")
        frozen = watcher.frozen_count()
        if frozen:
            detail += f", {frozen} frozen"
        if failed:
            detail += f"; restart failed: {', '.join(sorted(failed))}"
        if self.plist.errors:
            detail += f"; {len(self.plist.errors)} invalid list entr(ies) left out"
        if not self.workers:
            return Health(ok=True, warn=True, detail=f"the process list "
                                  f"{self.plist.path} names no process: nothing is watched")
        return Health(ok=not failed and not self.plist.errors, detail=detail)
