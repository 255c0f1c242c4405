"""The daemon runtime shared by the three monitors.

Sources (libvirt, pidfd, netlink, ...) share one small shape, like node_exporter's
collectors; the runtime starts them, gives them ``emit`` (which writes into the outbox
before anything else happens), runs the delivery worker, talks sd_notify (READY, STATUS,
WATCHDOG, STOPPING), reloads on SIGHUP (a new configuration that fails validation is
rejected and the old one stays in force) and stops gracefully on SIGTERM.

oslo.service's threading backend runs the service; we use its in-process ``Launcher``
rather than the cotyledon ``ServiceLauncher``, which would fork a child (twice the memory,
and sd_notify from a non-main pid needs NotifyAccess=all).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Callable

from oslo_config import cfg
from oslo_service.backend.base import ServiceBase

from monitors import actions, config, drivers as drivers_mod, log, metrics, statefile
from monitors.backlog import Backlog
from monitors.delivery import DeliveryWorker
from monitors.emitter import Emitter
from monitors.history import ReadModel
from monitors.notification import InvalidNotification
from monitors.outbox import Outbox
from monitors.procfs import pid_namespace
from monitors.sdnotify import Notifier
from monitors.source import Health, StartError, build as build_enabled_sources

LOG = logging.getLogger(__name__)


# Builds a daemon's sources (conf, emitter_for(source name)); the default is the registry
# (monitors/source.py: every enabled source of the daemon's package). Tests pass their own.
SourceFactory = Callable[[cfg.ConfigOpts, Callable[[str], Emitter]], list]

STATUS_BLOCK = 4096
RESTART_ONLY = ("debug", "log_file", "log_dir", "use_journal", "use_syslog", "log_config_append")


def write_status_file(path: str, doc: dict) -> None:
    """Padded to whole 4 KiB blocks (see statefile): when the disk is full it is still
    overwritten in place, so `ha-monitors status` reads the cause. Never raises."""
    try:
        statefile.write(path, doc, fsync=False, pad_block=STATUS_BLOCK)
    except OSError as error:
        now = time.monotonic()
        if now - _status_warned.get(path, -1e9) >= 60.0:  # once a minute, not every round
            _status_warned[path] = now
            LOG.warning("cannot write %s: %s", path, error)


_status_warned: dict[str, float] = {}


class MonitorService(ServiceBase):
    """One daemon: its sources, the outbox, the delivery worker, sd_notify."""

    def __init__(self, conf, name: str, build_sources: SourceFactory | None, notifier: Notifier):
        self.conf = conf
        self.name = name
        self.build_sources = build_sources
        self.notifier = notifier
        self.sources: list = []
        self.emitters: dict[str, Emitter] = {}
        self.outbox: Outbox | None = None
        self.worker: DeliveryWorker | None = None
        self.metrics: metrics.Endpoint | None = None
        self.backlog = Backlog()
        self.start_error: str | None = None
        self.reload_state: dict = {"seq": 0}  # the last SIGHUP's verdict, for `reload`
        self.outbox_problem: str | None = None  # the last probe's failure, if any
        self.recovered: dict | None = None  # the outbox file's last recovery {text, at}
        self._stopped = threading.Event()
        self._status_thread: threading.Thread | None = None
        self._backlog_wake = threading.Event()
        self._state_lock = threading.Lock()  # one writer of the status file at a time
        self._owner: str | None = None  # the outbox's owner id, for the status file
        self._supervised = bool(os.environ.get("NOTIFY_SOCKET")
                                or os.environ.get("INVOCATION_ID"))

    # -- oslo.service interface -------------------------------------------------------------
    def start(self) -> None:
        try:
            self._start()
        except Exception as exc:  # noqa: BLE001 - one clear line, then exit non-zero
            self.start_error = (str(exc) if isinstance(exc, StartError)
                                else f"{type(exc).__name__}: {exc}")
            LOG.error("%s cannot start: %s", self.name, self.start_error,
                      exc_info=not isinstance(exc, StartError))
            self._abort_start()
            self._stopped.set()

    def _start(self) -> None:
        path = config.outbox_path(self.conf)
        try:
            self.outbox = config.open_outbox(self.conf)
        except Exception as exc:  # noqa: BLE001
            raise StartError(f"cannot open the outbox {path}: {exc}") from exc
        try:  # held for the whole life of the process: readers judge us by it
            self._owner = self.outbox.owner
        except OSError as exc:
            raise StartError(str(exc)) from exc
        if self.outbox.recovered:
            self.recovered = {"text": self.outbox.recovered, "at": time.time()}
        self.metrics = metrics.serve(self.conf.metrics.bind, self)
        self.worker = DeliveryWorker(self.conf, self.outbox, drivers_mod.load(
                                         self.conf, actions.delivery_drivers(self.conf)),
                                     threads=self.conf.delivery.workers)
        self.worker.start()
        try:
            self.sources = self._build_sources()
        except Exception as exc:  # noqa: BLE001
            raise StartError(f"no source could be set up: {type(exc).__name__}: {exc}") from exc
        failed = {}
        for source in self.sources:
            try:
                source.start()
            except Exception as exc:  # noqa: BLE001 - one failing source never takes the rest down
                failed[source.name] = f"{type(exc).__name__}: {exc}"
                LOG.exception("source %s failed to start; the others keep running",
                              source.name)
        if self.sources and len(failed) == len(self.sources):
            raise StartError("no source could start (" + "; ".join(
                f"{n}: {e}" for n, e in failed.items()) + "): nothing to watch")
        line = self._write_state("running")
        self.notifier.ready(line)  # with the first watchdog ping
        LOG.info("%s started: %s", self.name, line)
        self._status_thread = threading.Thread(target=self._status_loop, name="status",
                                               daemon=True)
        self._status_thread.start()
        threading.Thread(target=self._backlog_loop, name="backlog", daemon=True).start()

    def _emitter(self, source_name: str) -> Emitter:
        emitter = Emitter(self.conf, self.outbox, f"{self.name}/{source_name}", self.backlog)
        self.emitters[source_name] = emitter
        return emitter

    def _build_sources(self) -> list:
        """The enabled sources registered for this daemon (entry points), or the daemon's
        own factory where one is given."""
        if self.build_sources is not None:
            return self.build_sources(self.conf, self._emitter)
        return build_enabled_sources(self.conf, self.name, self._emitter)

    def _abort_start(self) -> None:
        for source in self.sources:
            try:
                source.stop()
            except Exception:  # noqa: BLE001
                pass
        if self.worker:
            self.worker.stop(timeout=1)
        if self.metrics:
            self.metrics.close()

    def stop(self, graceful: bool = True) -> None:
        if self._stopped.is_set():
            return
        self.notifier.stopping(f"stopping; outbox {self._depth()} pending")
        LOG.info("%s stopping", self.name)
        for source in self.sources:
            try:
                source.stop()
            except Exception:  # noqa: BLE001
                LOG.exception("source %s failed to stop", source.name)
        if self.outbox is not None and len(self.backlog):
            self.backlog.flush(self.outbox)
        for line in self.backlog.dump():  # the journal keeps what memory loses
            LOG.error("stopping with a detection the outbox never took (%s): %s; replay it "
                      "with ha-monitors notify", self.backlog.error, line)
        if self.worker:
            self.worker.stop(timeout=self.conf.delivery.http_timeout + 2)
        if self.metrics:
            self.metrics.close()
        self._stopped.set()
        self._write_state("stopped")
        LOG.info("%s stopped; %s notification(s) left pending in the outbox", self.name,
                 self._depth())

    def wait(self) -> None:
        while not self._stopped.wait(1.0):
            pass

    def reset(self) -> None:
        pass

    # -- reload -----------------------------------------------------------------------------
    def reload(self, new_conf) -> tuple[list[str], list[str]]:
        """Hand a validated new configuration to the sources and the delivery worker; a
        source refusing it keeps its old one (and says why). Returns (refused, not_applied):
        what a source or the delivery refused (the file would not start cleanly), and
        settings accepted but applied only at the next restart — one line each."""
        self.notifier.send(RELOADING=1, MONOTONIC_USEC=int(time.monotonic() * 1e6))
        refused, not_applied = [], []
        for source in self.sources:
            try:
                source.reload(new_conf)
            except Exception as exc:  # noqa: BLE001
                LOG.error("reload: source %s keeps its previous configuration: %s",
                          source.name, exc)
                refused.append(f"{source.name}: {exc}")
        if new_conf.state_path != self.conf.state_path:
            not_applied.append(f"[DEFAULT] state_path: the outbox stays {self.outbox.path} "
                               "until the next restart")
        for option in RESTART_ONLY:  # logging is set up once, at start
            try:
                changed = getattr(new_conf, option) != getattr(self.conf, option)
            except (cfg.NoSuchOptError, AttributeError):
                continue
            if changed:
                not_applied.append(f"[DEFAULT] {option}: logging is set up at start; it "
                                   "applies at the next restart")
        refused += self._reload_delivery(new_conf)
        for emitter in self.emitters.values():
            emitter.conf = new_conf
        self.conf = new_conf
        self.metrics = metrics.reload(self.metrics, new_conf.metrics.bind, self)
        for line in not_applied:
            LOG.warning("reload: not applied: %s", line)
        self.notifier.send(READY=1, STATUS=self.status_line())
        return refused, not_applied

    def _reload_delivery(self, new_conf) -> list[str]:
        """A new worker with the new [api], [delivery], [webhook] settings and drivers; the
        old one finishes its in-flight sends and stops. If the new drivers cannot be loaded,
        the old worker keeps running and the reason is returned."""
        try:
            drivers = drivers_mod.load(new_conf, actions.delivery_drivers(new_conf))
        except Exception as exc:  # noqa: BLE001
            return [f"[delivery] drivers / [api] / [webhook]: {exc}; delivery keeps the "
                    "previous settings"]
        old, self.worker = self.worker, DeliveryWorker(new_conf, self.outbox, drivers,
                                                       threads=new_conf.delivery.workers)
        self.worker.start()
        if old is not None:
            threading.Thread(target=old.stop, args=(new_conf.delivery.http_timeout + 2,),
                             name="delivery-retire", daemon=True).start()
        LOG.info("reload: delivery via %s with the new [api]/[delivery]/[webhook] settings",
                 ", ".join(drivers))
        return []

    def record_reload(self, ok: bool, error: str = "", not_applied=(),
                      partial: bool = False) -> None:
        """The verdict `ha-monitors reload` waits for, written at once into the status file.
        Not ok: the file on disk would not start cleanly; status says WARNING until it is
        fixed (rechecked every 5 s) or a reload succeeds."""
        self.reload_state = {"seq": self.reload_state.get("seq", 0) + 1, "ok": ok,
                             "error": error, "not_applied": list(not_applied),
                             "partial": partial, "at": time.time()}
        self._write_state("running")

    # -- status -----------------------------------------------------------------------------
    def _depth(self) -> int:
        try:
            return ReadModel(self.outbox).depth() if self.outbox else 0
        except Exception:  # noqa: BLE001
            return -1

    def health(self) -> dict[str, Health]:
        out = {}
        for source in self.sources:
            try:
                out[source.name] = source.health()
            except Exception as exc:  # noqa: BLE001
                out[source.name] = Health(False, f"health check failed: {exc}")
            stuck = self._stuck(source)
            if stuck:
                out[source.name] = Health(False, stuck)
        return out

    @staticmethod
    def _stuck(source) -> str | None:
        """Why a source's loop no longer runs: a dead thread, or no tick (see Source)."""
        try:
            dead = [t.name for t in source.threads() if t.ident is not None and not t.is_alive()]
        except Exception as exc:  # noqa: BLE001
            return f"cannot check its threads: {exc}"
        if dead:
            return f"thread(s) died: {', '.join(dead)} (restart the daemon; see the log)"
        try:
            return source.ticked()
        except Exception as exc:  # noqa: BLE001
            return f"cannot check its loop: {exc}"

    def status_line(self, health: dict[str, Health] | None = None) -> str:
        health = self.health() if health is None else health
        parts = []
        held = self.backlog.state()
        if held["error"]:
            parts.append(f"DEGRADED: {held['error']}; {held['held']} detection(s) held in "
                         "memory")
        elif self.outbox_problem:
            parts.append(f"DEGRADED: {self.outbox_problem}")
        if not self.reload_state.get("ok", True):
            parts.append(f"reload refused: {self.reload_state['error'][:200]}")
        parts += [f"{name}: {h.detail}" for name, h in health.items()] or ["no sources"]
        parts.append(f"outbox {self._depth()} pending")
        answer = self.worker.last_answer if self.worker else None
        if answer and answer.outcome not in ("delivered", "duplicate"):
            parts.append(f"API: {answer.message[:80]}")
        return "; ".join(parts)

    def _write_state(self, state: str) -> str:
        """What `ha-monitors status` reads: one small JSON file per daemon, from the same
        health round as the status line it returns (for sd_notify)."""
        with self._state_lock:  # the status loop and a reload verdict: never an older doc last
            return self._write_state_locked(state)

    def _write_state_locked(self, state: str) -> str:
        health = self.health()
        line = self.status_line(health)
        last = [e.last_event for e in self.emitters.values() if e.last_event]
        doc = {"daemon": self.name, "pid": os.getpid(), "pid_namespace": pid_namespace(),
               "owner": self._owner, "state": state,
               "updated_at": time.time(), "status": line,
               "last_event": max(last) if last else None,
               "supervised": self._supervised,
               "outbox": {**self.backlog.state(), "problem": self.outbox_problem,
                          "recovered": self.recovered},
               "reload": self.reload_state,
               "sources": {n: dataclasses.asdict(h) for n, h in health.items()}}
        path = os.path.join(self.conf.state_path, f"{self.name}.status.json")
        write_status_file(path, doc)
        return line

    def _probe_outbox(self) -> bool:
        """A write and a read answered since the last round (a storage error counts as an
        answer: it is reported as DEGRADED, and a restart would not make space but would
        lose what is held in memory). Also notices a deleted or replaced outbox file."""
        try:
            before = self.outbox.recovered
            self.outbox.check_file()
            self.outbox.probe(self.name)
            if self.outbox.recovered and self.outbox.recovered is not before:
                self.recovered = {"text": self.outbox.recovered, "at": time.time()}
        except Exception as exc:  # noqa: BLE001
            from monitors.backlog import describe, is_outbox_failure
            if not is_outbox_failure(exc):  # a bug: no ping, systemd restarts us
                LOG.exception("outbox probe failed")
                return False
            self.outbox_problem = describe(exc, self.outbox.path)
            return True
        if self.outbox_problem:
            LOG.warning("outbox answers again (was: %s)", self.outbox_problem)
        self.outbox_problem = None
        if len(self.backlog):
            self._backlog_wake.set()
        return True

    def _status_loop(self) -> None:
        interval = min(self.notifier.watchdog_interval or 5.0, 5.0)
        recheck = 0.0
        while not self._stopped.wait(interval):
            # The probe writes and reads the outbox: a hung database blocks here, so the
            # pings stop and systemd restarts the daemon.
            answered = self._probe_outbox()
            line = self._write_state("running")
            alive = self.worker is not None and all(t.is_alive() for t in self.worker._workers)
            sources_ok = not any(self._stuck(s) for s in self.sources)
            self.notifier.status(line)
            if alive and answered and sources_ok:
                self.notifier.watchdog()
            if not self.reload_state.get("ok", True) and time.monotonic() >= recheck:
                recheck = time.monotonic() + 5.0
                self._recheck_refused_config()

    def _recheck_refused_config(self) -> None:
        """After a refused SIGHUP: is the file on disk fixed? (It would stop the next start.)"""
        checker = getattr(self, "validate_on_disk", None)
        if checker is None:
            return
        try:
            checker()
        except Exception:  # noqa: BLE001 - still broken: the WARNING stays
            return
        LOG.info("the configuration on disk is valid again (not applied yet: reload to "
                 "apply it)")
        self.reload_state = {**self.reload_state, "ok": True, "error": "",
                             "fixed_at": time.time()}

    def _backlog_loop(self) -> None:
        """Retry held detections every second until the outbox takes them."""
        while not self._stopped.is_set():
            self._backlog_wake.wait(1.0)
            self._backlog_wake.clear()
            if len(self.backlog):
                try:
                    self.backlog.flush(self.outbox)
                except Exception:  # noqa: BLE001
                    LOG.exception("retrying held detections failed")


def _parse(name: str, argv, register) -> cfg.ConfigOpts:
    conf = config.new_conf()
    log.register(conf)
    from oslo_service import _options as service_options  # graceful_shutdown_timeout

    conf.register_opts(service_options.service_opts)
    if register:
        register(conf)
    return config.load(conf, argv, f"ha-{name}")


def _load_valid(name, argv, register, validate) -> cfg.ConfigOpts:
    conf = _parse(name, argv, register)
    problems = config.problems(conf)
    if problems:
        raise ValueError("; ".join(problems))
    if validate:
        validate(conf)
    return conf


@contextlib.contextmanager
def _without_eventlet():
    """Import oslo.service's threading backend without eventlet: futurist (under it) imports
    eventlet when installed, and with it dnspython and cryptography, ~20 MiB of a daemon's
    memory for green threads nothing here uses. While inside, ``import eventlet`` fails
    (futurist then disables its green executors); afterwards it imports normally again."""
    blocked = "eventlet" not in sys.modules
    if blocked:
        sys.modules["eventlet"] = None
    try:
        yield
    finally:
        if blocked and sys.modules.get("eventlet", 0) is None:
            del sys.modules["eventlet"]


def run(name: str, build_sources: SourceFactory | None = None, argv=None, register=None,
        validate: Callable[[cfg.ConfigOpts], None] | None = None) -> int:
    """Entry point of a daemon: parse config, validate it, start, serve until SIGTERM."""
    import warnings

    from oslo_service import backend

    # futurist imports eventlet if it is installed (oslo.service depends on it); nothing is
    # monkey-patched and it is never used, so its deprecation banner is only noise.
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    with _without_eventlet():
        backend.init_backend(backend.BackendType.THREADING)
        from oslo_service import service as oslo_service

    argv = sys.argv[1:] if argv is None else argv
    try:
        conf = _load_valid(name, argv, register, validate)
    except (cfg.Error, ValueError, OSError, InvalidNotification) as exc:
        print(f"ha-{name}: configuration error: {exc}", file=sys.stderr)
        return 2
    log.setup(conf, f"ha-{name}")
    for warning in config.ignored_settings(conf):
        LOG.warning("%s", warning)
    notifier = Notifier()
    svc = MonitorService(conf, name, build_sources, notifier)
    term, hup = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: term.set())
    signal.signal(signal.SIGINT, lambda *_: term.set())
    signal.signal(signal.SIGHUP, lambda *_: hup.set())
    svc.validate_on_disk = lambda: _load_valid(name, argv, register, validate)
    launcher = oslo_service.Launcher(conf)
    launcher.launch_service(svc)
    while not term.wait(0.2):
        if svc._stopped.is_set():
            break
        if hup.is_set():
            hup.clear()
            LOG.info("SIGHUP: reloading the configuration")
            try:
                new_conf = _load_valid(name, argv, register, validate)
            except (cfg.Error, ValueError, OSError, InvalidNotification) as exc:
                LOG.error("SIGHUP: new configuration rejected, the old one stays in force: "
                          "%s", exc)
                svc.record_reload(False, str(exc))
                notifier.send(READY=1, STATUS=f"reload rejected: {exc}; " + svc.status_line())
                continue
            try:
                refused, not_applied = svc.reload(new_conf)
            except Exception as exc:  # noqa: BLE001 - a reload must never kill the daemon
                LOG.exception("SIGHUP: reload failed")
                svc.record_reload(False, f"{type(exc).__name__}: {exc}")
                continue
            svc.record_reload(not refused, "; ".join(refused), not_applied, partial=True)
    if svc.start_error:
        print(f"ha-{name}: cannot start: {svc.start_error}", file=sys.stderr)
        sys.stderr.flush()
        logging.shutdown()
        os._exit(1)  # oslo's launcher thread (waiting for a stop) would keep us alive
    stopper = threading.Thread(target=launcher.stop, daemon=True)
    stopper.start()
    stopper.join(conf.graceful_shutdown_timeout or None)
    # Stopped gracefully: sources stopped, in-flight sends finished, the outbox closed.
    # Exit now rather than in the interpreter's shutdown, which joins every non-daemon
    # thread: one that never ended hung a hostmonitor after SIGTERM until SIGKILL (CI: the
    # hung-mount, OOM and kmsg-restart tests). Which thread it was is not known: a plain
    # stopped hostmonitor has none left, and oslo.service's launcher thread ends on stop().
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
