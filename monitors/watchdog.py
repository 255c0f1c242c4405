"""Feeding a Linux watchdog device: the host resets itself when the daemon says so or hangs.

Why: a peer may say "this host fenced itself" (etcd's ``etcd_self_fence_deadline``) only if
something resets the host even when the daemon that should fence it is stuck. A hardware or
kernel watchdog does that: once opened it resets the machine ``timeout`` seconds after the
last pet, whatever user space does. The daemon pets it while its own rules say it may keep
running, and stops petting (for good: the decision is latched) when they say it must not, or
when a loop it depends on stops making progress. This is what sbd, Proxmox's watchdog-mux
and medik8s Self Node Remediation do.

The interface is the kernel's /dev/watchdog (Documentation/watchdog/watchdog-api.rst):

- ``open`` arms it (the driver's default timeout until set);
- ``WDIOC_SETTIMEOUT`` / ``WDIOC_GETTIMEOUT`` set and read back the timeout (a driver may
  round it up: the value read back is what counts);
- any ``write`` pets it (a NUL byte here: the device double in tests records it);
- the magic close, writing ``V`` then closing, disarms it (unless the kernel was built with
  nowayout); a close without it leaves the timer running, so the host resets unless a new
  opener (the restarted daemon) pets it in time.

systemd's ``RuntimeWatchdogSec`` is not used: there PID 1 owns /dev/watchdog (a second
``open`` gets EBUSY) and pets it while PID 1 runs, and a unit's ``WatchdogSec`` only
restarts the service, which takes a new lease and carries on: nothing would reset the host
because this daemon lost its lease. Use a device of its own (``/dev/watchdog1``) or leave
``RuntimeWatchdogSec`` off.

Everything with a clock takes ``clock`` (monotonic seconds) so the decision is tested at its
boundary without waiting; the device path is injectable (a FIFO or a regular file stands in
for the device on machines without one: ioctls then fail with ENOTTY and the configured
timeout is assumed).
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import threading
import time
from typing import Callable

LOG = logging.getLogger(__name__)

# linux/watchdog.h: _IOWR('W', 6, int) and _IOR('W', 7, int)
WDIOC_SETTIMEOUT = 0xC0045706
WDIOC_GETTIMEOUT = 0x80045707
PET = b"\0"
MAGIC_CLOSE = b"V"


class WatchdogError(Exception):
    """The device cannot be used as configured (its path or timeout is named)."""


class Device:
    """One open watchdog device."""

    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None
        self.timeout: int | None = None   # as the driver reports it (None: not known)

    def open(self, timeout: int) -> int:
        """Open (arms it), set the timeout and return the one the driver took (the
        configured one when the device has no timeout ioctls, e.g. a test double)."""
        try:
            # No O_CREAT: a mistyped path must fail, never "work" on a new file.
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise WatchdogError(f"cannot open the watchdog {self.path}: "
                                f"{exc.strerror or exc}") from exc
        self.timeout = timeout
        try:
            fcntl.ioctl(self.fd, WDIOC_SETTIMEOUT, struct.pack("i", timeout))
            got = struct.unpack("i", fcntl.ioctl(self.fd, WDIOC_GETTIMEOUT,
                                                 struct.pack("i", 0)))[0]
            self.timeout = got
        except OSError as exc:
            if exc.errno not in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                raise WatchdogError(f"watchdog {self.path}: cannot set its timeout "
                                    f"{timeout}s: {exc.strerror or exc}") from exc
            LOG.warning("watchdog %s has no timeout ioctls (%s): assuming %ds", self.path,
                        exc.strerror, timeout)
        return self.timeout

    def pet(self) -> None:
        os.write(self.fd, PET)

    def close(self, disarm: bool) -> None:
        """Close; ``disarm`` writes the magic close first (else the timer keeps running)."""
        if self.fd is None:
            return
        try:
            if disarm:
                os.write(self.fd, MAGIC_CLOSE)
        finally:
            os.close(self.fd)
            self.fd = None


class Feeder:
    """Pets ``device`` every ``interval`` seconds while ``verdict()`` returns None and
    every watched loop marked progress within its bound. The first reason to stop (a
    string) is kept: the feeder never pets again, the device resets the host.

    ``verdict`` is the caller's rule (e.g. etcd: own leases lost for longer than a
    bound); loops call ``mark(name)`` on each iteration after ``watch(name, bound)``.
    """

    def __init__(self, device: Device, verdict: Callable[[], str | None], interval: float,
                 clock: Callable[[], float] = time.monotonic):
        self.device = device
        self.verdict = verdict
        self.interval = interval
        self.clock = clock
        self.stopped_feeding: str | None = None   # why it stopped (latched)
        self.pets = 0
        self.ticks = 0
        self._loops: dict[str, list[float]] = {}  # name -> [bound, last mark]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- progress of the loops it depends on -------------------------------------------------
    def watch(self, name: str, bound: float) -> None:
        self._loops[name] = [bound, self.clock()]

    def mark(self, name: str) -> None:
        loop = self._loops.get(name)
        if loop is not None:
            loop[1] = self.clock()

    def stalled(self) -> str | None:
        now = self.clock()
        for name, (bound, last) in self._loops.items():
            if now - last > bound:
                return f"loop {name} made no progress for {now - last:.1f}s (> {bound:g}s)"
        return None

    # -- one decision ------------------------------------------------------------------------
    def tick(self) -> str | None:
        """Decide once and pet if allowed; returns why feeding stopped, or None."""
        self.ticks += 1
        if self.stopped_feeding is None:
            try:
                why = self.stalled() or self.verdict()
            except Exception as exc:  # noqa: BLE001 - a broken rule is no reason to live
                why = f"the feeding rule failed: {type(exc).__name__}: {exc}"
            if why:
                self.stopped_feeding = why
                LOG.critical("watchdog %s: stopped feeding it (%s): this host resets within "
                             "%ss", self.device.path, why, self.device.timeout)
                return why
            try:
                self.device.pet()
                self.pets += 1
            except OSError as exc:
                LOG.error("watchdog %s: pet failed: %s", self.device.path, exc)
        return self.stopped_feeding

    # -- the thread --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="watchdog-feeder",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.interval)

    def stop(self, disarm: bool, timeout: float = 2.0) -> None:
        """End the thread and close the device: ``disarm`` (magic close) only when asked
        and feeding had not stopped (a host due to be reset stays due)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        really = disarm and self.stopped_feeding is None
        self.device.close(disarm=really)
        if not really:
            LOG.warning("watchdog %s closed without the magic close: it stays armed and "
                        "resets this host in %ss unless a new daemon feeds it",
                        self.device.path, self.device.timeout)

    def status(self) -> str:
        if self.stopped_feeding:
            return f"watchdog NOT fed ({self.stopped_feeding}): host resetting"
        return f"watchdog {self.device.path} fed ({self.device.timeout}s)"
