"""The processmonitor source: ties the process list, the watcher and the workers together."""
from __future__ import annotations

import logging

from monitors.source import Health

from processmonitor import process_list
from processmonitor.restarter import FAILED, EntryWorker
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


class ProcessSource:
    name = "processes"

    def __init__(self, conf):
        self.conf = conf
        self.plist = load_list(conf)
        self.workers: dict[str, EntryWorker] = {}
        self.watcher: Watcher | None = None
        self._emit = None

    def _settings(self) -> dict:
        conf = self.conf
        return {"restart_retries": conf.process.restart_retries,
                "restart_interval": conf.process.restart_interval,
                "command_timeout": conf.processmonitor.command_timeout,
                "restart_grace": conf.processmonitor.restart_grace}

    def _on_change(self, name: str, running: bool, pid, how: str) -> None:
        worker = self.workers.get(name)
        if worker is not None:
            worker.observe(running, pid, how)

    def _worker(self, entry) -> EntryWorker:
        return EntryWorker(entry, self._settings, self._emit, self.watcher,
                           lambda: self.conf.hostname)

    def start(self, emit) -> None:
        self._emit = emit
        self.watcher = Watcher(self.plist.entries, self.conf.process.check_interval,
                               self._on_change, self.conf.processmonitor.proc_connector)
        for entry in self.plist.entries:
            self.workers[entry.process_name] = self._worker(entry)
        self.watcher.start()  # the first scan marks the running entries up
        for worker in self.workers.values():
            worker.start()
        LOG.info("watching %d process(es) of %s: %d pid(s); proc connector %s",
                 len(self.workers), self.plist.path, self.watcher.watched(),
                 "on" if self.watcher.proc_connector else "off (scan only)")
        self._warn_if_empty()

    def _warn_if_empty(self) -> None:
        if not self.workers:
            LOG.warning("the process list %s names no process: nothing is watched",
                        self.plist.path)

    def threads(self) -> list:
        """The watcher and each entry's restart thread must stay alive (watchdog)."""
        out = [w._thread for w in self.workers.values() if not w._stop.is_set()]
        if self.watcher is not None and getattr(self.watcher, "_thread", None) is not None:
            out.append(self.watcher._thread)
        return out

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        if self.watcher:
            self.watcher.stop()

    def reload(self, new_conf) -> None:
        plist = load_list(new_conf)  # ProcessListError is a ValueError: old list stays
        if plist.errors:
            raise ValueError(f"{len(plist.errors)} invalid entr"
                             f"{'y' if len(plist.errors) == 1 else 'ies'} in "
                             f"{plist.path}: {plist.errors[0]}")
        self.conf = new_conf
        self.watcher.check_interval = new_conf.process.check_interval
        new = {e.process_name: e for e in plist.entries}
        for name in list(self.workers):
            if name not in new:
                self.workers.pop(name).stop()
                LOG.info("process list: %s no longer watched", name)
        added = []
        for name, entry in new.items():
            if name in self.workers:
                self.workers[name].update(entry)
            else:
                self.workers[name] = self._worker(entry)
                added.append(self.workers[name])
        self.plist = plist
        self.watcher.set_entries(plist.entries)
        for worker in added:
            worker.start()
        LOG.info("process list reloaded: %d process(es)", len(self.workers))
        self._warn_if_empty()

    def health(self) -> Health:
        failed = [n for n, w in self.workers.items() if w.state == FAILED]
        watcher = self.watcher
        detail = (f"{len(self.workers)} process(es), {watcher.watched() if watcher else 0} "
                  f"pid(s) watched, proc connector "
                  f"{'on' if watcher and watcher.proc_connector else 'off'}")
        if failed:
            detail += f"; restart failed: {', '.join(sorted(failed))}"
        if self.plist.errors:
            detail += f"; {len(self.plist.errors)} invalid list entr(ies) left out"
        if not self.workers:
            return Health(ok=True, warn=True, detail=f"the process list "
                                  f"{self.plist.path} names no process: nothing is watched")
        return Health(ok=not failed and not self.plist.errors, detail=detail)
