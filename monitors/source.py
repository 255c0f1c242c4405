"""The source kit: what every detection source is, and how a daemon finds its sources.

Like node_exporter's collectors: one class per concern, registered by name under the entry
point namespace ``compute_ha_monitors.sources`` (as drivers are), enabled by configuration,
its options beside it. A daemon is its config groups plus the sources it enables; the
runtime (monitors/service.py) builds each enabled source with its emitter, starts it,
watches its threads and asks its health. One source failing never stops another.

A source detects and decides; it hands notifications to ``self.emit`` (the one door into
the outbox) and never talks HTTP nor reads the outbox back. What it must remember across
restarts goes into its own state file through monitors/statefile.py.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable

LOG = logging.getLogger(__name__)

NAMESPACE = "compute_ha_monitors.sources"


@dataclasses.dataclass
class Health:
    ok: bool
    detail: str
    warn: bool = False  # ok, but an operator should look (e.g. an empty process list)


class StartError(Exception):
    """The daemon cannot do its job (no outbox, no source started): exit non-zero."""


class Source:
    """Base of every source. Subclasses set ``name`` (its entry point name; the entry
    point's module lives in the package of the daemon that runs it), implement start() and
    health(), and may override enabled(), reload(), stop() and ticked().

    ``emit`` is given at construction (an Emitter: ``emit(notification, decision=...,
    on_stored=...)``). Threads started with spawn() are stopped by stop() and watched by
    the runtime: a dead one makes the source unhealthy and stops the watchdog pings.
    """

    name = "?"

    def __init__(self, conf, emit):
        self.conf = conf
        self.emit = emit
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def enabled(cls, conf) -> bool:
        """Whether this configuration asks for the source (checked before building it)."""
        return True

    def start(self) -> None:
        raise NotImplementedError

    def health(self) -> Health:
        raise NotImplementedError

    def reload(self, conf) -> None:
        """Take a new configuration; raise ValueError (naming the option) to refuse it."""
        self.conf = conf

    def stop(self, timeout: float = 2.0) -> None:
        """Ask every owned thread to end and wait for them, ``timeout`` seconds in all (one
        deadline, not per thread: a stuck worker must not multiply the shutdown)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))

    # -- the kit ------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def sleep(self, seconds: float) -> bool:
        """Wait; True when the source is being stopped (end the loop)."""
        return self._stop.wait(seconds)

    def spawn(self, target: Callable, name: str, *args) -> threading.Thread:
        """A daemon thread that belongs to this source (joined on stop, watched)."""
        thread = threading.Thread(target=target, name=name, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def threads(self) -> list[threading.Thread]:
        """Loops that must stay alive (the watchdog is pinged only while they are)."""
        return list(self._threads)

    def ticked(self) -> str | None:
        """Why the source's loop is stuck, or None when it ticked recently."""
        return None


def classes(daemon: str) -> dict[str, type[Source]]:
    """The registered sources of one daemon, by name: the entry points whose module lives
    in the daemon's package (only those are imported), sorted by name."""
    from importlib.metadata import entry_points

    out = {}
    for ep in sorted(entry_points(group=NAMESPACE), key=lambda e: e.name):
        if ep.value.split(".", 1)[0].split(":", 1)[0] == daemon:
            out[ep.name] = ep.load()
    return out


def build(conf, daemon: str, emitter_for: Callable[[str], object]) -> list[Source]:
    """Every enabled source of ``daemon``, each built with its own emitter."""
    return [cls(conf, emitter_for(name))
            for name, cls in classes(daemon).items() if cls.enabled(conf)]
