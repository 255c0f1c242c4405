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

import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Callable, Protocol

from oslo_config import cfg
from oslo_service.backend.base import ServiceBase

from monitors import actions, config, drivers as drivers_mod, log, metrics
from monitors.delivery import DeliveryWorker
from monitors.notification import InvalidNotification, Notification
from monitors.outbox import Outbox, PutResult, process_identity
from monitors.sdnotify import Notifier

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class Health:
    ok: bool
    detail: str


class Source(Protocol):
    """What every detection source provides."""

    name: str

    def start(self, emit: "Emitter") -> None: ...
    def stop(self) -> None: ...
    def reload(self, conf: cfg.ConfigOpts) -> None: ...  # raise ValueError to refuse
    def health(self) -> Health: ...


class Emitter:
    """The one door from a source into the outbox: validate, record durably, log."""

    def __init__(self, conf, outbox: Outbox, source: str):
        self.conf = conf
        self.outbox = outbox
        self.source = source
        self.last_event: float | None = None

    def __call__(self, notification: Notification, decision: dict | None = None,
                 drivers: list[str] | None = None) -> PutResult:
        # The routing decision (which actions this detection asks for) is made here, where
        # the row is created, and recorded with it; drivers only execute.
        result = actions.put(self.outbox, self.conf, notification, source=self.source,
                             decision=decision, drivers=drivers)
        self.last_event = time.time()
        metrics.event_detected(self.source, notification.type, result.queued)
        fields = {**notification.subject(), "NOTIFICATION_ID": result.id,
                  "DELIVERY_STATE": "pending", "SOURCE": self.source}
        if result.queued:
            log.event(LOG, logging.WARNING, "detected %s %s on %s: queued as notification %s",
                      notification.type, json.dumps(notification.payload, sort_keys=True),
                      notification.hostname, result.id, fields=fields)
        else:
            log.event(LOG, logging.INFO, "detected %s %s again: notification %s still "
                      "pending, not queued twice", notification.type,
                      json.dumps(notification.payload, sort_keys=True), result.id,
                      fields=fields)
        return result


SourceFactory = Callable[[cfg.ConfigOpts], list]


class MonitorService(ServiceBase):
    """One daemon: its sources, the outbox, the delivery worker, sd_notify."""

    def __init__(self, conf, name: str, build_sources: SourceFactory, notifier: Notifier):
        self.conf = conf
        self.name = name
        self.build_sources = build_sources
        self.notifier = notifier
        self.sources: list = []
        self.emitters: dict[str, Emitter] = {}
        self.outbox: Outbox | None = None
        self.worker: DeliveryWorker | None = None
        self.metrics: metrics.Endpoint | None = None
        self._stopped = threading.Event()
        self._status_thread: threading.Thread | None = None
        self._owner = process_identity()  # pid:starttime, for the status file

    # -- oslo.service interface -------------------------------------------------------------
    def start(self) -> None:
        self.outbox = Outbox(config.outbox_path(self.conf))
        self.metrics = metrics.serve(self.conf.metrics.bind, self)
        self.worker = DeliveryWorker(self.conf, self.outbox,
                                     drivers_mod.load(self.conf, [*self.conf.delivery.drivers,
                                                                  *actions.enabled(self.conf)]),
                                     threads=self.conf.delivery.workers)
        self.worker.start()
        self.sources = self.build_sources(self.conf)
        for source in self.sources:
            emitter = Emitter(self.conf, self.outbox, f"{self.name}/{source.name}")
            self.emitters[source.name] = emitter
            try:
                source.start(emitter)
            except Exception:  # noqa: BLE001 - one failing source never takes the rest down
                LOG.exception("source %s failed to start; the others keep running",
                              source.name)
        line = self._write_state("running")
        self.notifier.ready(line)
        LOG.info("%s started: %s", self.name, line)
        self._status_thread = threading.Thread(target=self._status_loop, name="status",
                                               daemon=True)
        self._status_thread.start()

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
    def reload(self, new_conf) -> None:
        """Hand a validated new configuration to the sources; a source refusing it keeps
        its old one (and says why)."""
        self.notifier.send(RELOADING=1, MONOTONIC_USEC=int(time.monotonic() * 1e6))
        for source in self.sources:
            try:
                source.reload(new_conf)
            except Exception as exc:  # noqa: BLE001
                LOG.error("reload: source %s keeps its previous configuration: %s",
                          source.name, exc)
        for emitter in self.emitters.values():
            emitter.conf = new_conf
        self.conf = new_conf
        self.metrics = metrics.reload(self.metrics, new_conf.metrics.bind, self)
        self.notifier.send(READY=1, STATUS=self.status_line())

    # -- status -----------------------------------------------------------------------------
    def _depth(self) -> int:
        try:
            return self.outbox.depth() if self.outbox else 0
        except Exception:  # noqa: BLE001
            return -1

    def health(self) -> dict[str, Health]:
        out = {}
        for source in self.sources:
            try:
                out[source.name] = source.health()
            except Exception as exc:  # noqa: BLE001
                out[source.name] = Health(False, f"health check failed: {exc}")
        return out

    def status_line(self, health: dict[str, Health] | None = None) -> str:
        health = self.health() if health is None else health
        parts = [f"{name}: {h.detail}" for name, h in health.items()] or ["no sources"]
        parts.append(f"outbox {self._depth()} pending")
        answer = self.worker.last_answer if self.worker else None
        if answer and answer.outcome not in ("delivered", "duplicate"):
            parts.append(f"API: {answer.message[:80]}")
        return "; ".join(parts)

    def _write_state(self, state: str) -> str:
        """What `ha-monitors status` reads: one small JSON file per daemon, from the same
        health round as the status line it returns (for sd_notify)."""
        health = self.health()
        line = self.status_line(health)
        last = [e.last_event for e in self.emitters.values() if e.last_event]
        doc = {"daemon": self.name, "pid": os.getpid(), "owner": self._owner, "state": state,
               "updated_at": time.time(), "status": line,
               "last_event": max(last) if last else None,
               "sources": {n: dataclasses.asdict(h) for n, h in health.items()}}
        path = os.path.join(self.conf.state_path, f"{self.name}.status.json")
        tmp = path + ".tmp"
        try:
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                json.dump(doc, f)
            os.replace(tmp, path)
        except OSError as exc:
            LOG.warning("cannot write %s: %s", path, exc)
        return line

    def _status_loop(self) -> None:
        interval = min(self.notifier.watchdog_interval or 5.0, 5.0)
        while not self._stopped.wait(interval):
            # One health round for the file and STATUS; it reads the outbox, so a hung
            # database stops the pings.
            line = self._write_state("running")
            alive = self.worker is not None and all(t.is_alive() for t in self.worker._workers)
            self.notifier.status(line)
            if alive:
                self.notifier.watchdog()


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


def run(name: str, build_sources: SourceFactory, argv=None, register=None,
        validate: Callable[[cfg.ConfigOpts], None] | None = None) -> int:
    """Entry point of a daemon: parse config, validate it, start, serve until SIGTERM."""
    import warnings

    from oslo_service import backend

    # futurist imports eventlet if it is installed (oslo.service depends on it); nothing is
    # monkey-patched and it is never used, so its deprecation banner is only noise.
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
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
            except (cfg.Error, ValueError, OSError) as exc:
                LOG.error("SIGHUP: new configuration rejected, the old one stays in force: "
                          "%s", exc)
                notifier.status(f"reload rejected: {exc}; " + svc.status_line())
                continue
            svc.reload(new_conf)
    stopper = threading.Thread(target=launcher.stop, daemon=True)
    stopper.start()
    stopper.join(conf.graceful_shutdown_timeout or None)
    return 0
