"""The watchdog feeder (monitors/watchdog.py) at its boundary: the device.

This machine has no watchdog device (no softdog, no loadable modules: see
docs/hostmonitor-peers.md), so the device is a double the feeder opens by path exactly as it
opens /dev/watchdog: a FIFO whose reader records every byte (a pet is a NUL, the magic
close a ``V``) and the close (EOF), or a regular file. What a real device does with those
bytes (reset the host ``timeout`` seconds after the last pet unless ``V`` came before the
close) is the kernel's; what is shown here is which bytes the daemon writes, and when it
stops writing them.
"""
from __future__ import annotations

import os
import threading

import pytest

from monitors import watchdog
from tests.helpers import wait_for


class FifoDevice:
    """A FIFO standing in for /dev/watchdog: records pets, the magic close and the close."""

    def __init__(self, path):
        self.path = str(path)
        os.mkfifo(self.path)
        self.bytes = bytearray()
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        with open(self.path, "rb", buffering=0) as f:  # blocks until the feeder opens it
            while chunk := f.read(64):
                self.bytes += chunk
        self.closed.set()

    @property
    def pets(self) -> int:
        return self.bytes.count(watchdog.PET)

    @property
    def magic_closed(self) -> bool:
        return self.bytes.endswith(watchdog.MAGIC_CLOSE)


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def test_feeds_while_allowed_then_stops_for_good_and_stays_armed(tmp_path):
    dev = FifoDevice(tmp_path / "watchdog")
    reason = []
    feeder = watchdog.Feeder(watchdog.Device(dev.path), lambda: reason[0] if reason else None,
                             interval=0.01)
    assert feeder.device.open(5) == 5  # no timeout ioctls on a FIFO: the configured one
    feeder.start()
    wait_for(lambda: dev.pets >= 5, 10, what="pets")
    reason.append("lost its lease")
    wait_for(lambda: feeder.stopped_feeding, 10, what="the stop decision")
    pets_at_stop, ticks = feeder.pets, feeder.ticks
    reason.clear()  # the reason going away does not revive it: the reset is due
    wait_for(lambda: feeder.ticks >= ticks + 10, 10, what="ticks after the stop")
    assert feeder.stopped_feeding == "lost its lease"
    assert feeder.pets == pets_at_stop and dev.pets == pets_at_stop  # not one pet more
    # a stop asked to disarm does not disarm a host that is due to reset
    feeder.stop(disarm=True)
    assert dev.closed.wait(5)
    assert not dev.magic_closed and set(dev.bytes) == {0}


def test_clean_stop_disarms_only_when_asked(tmp_path):
    for disarm in (True, False):
        dev = FifoDevice(tmp_path / f"wd-{disarm}")
        feeder = watchdog.Feeder(watchdog.Device(dev.path), lambda: None, interval=0.01)
        feeder.device.open(5)
        feeder.start()
        wait_for(lambda: dev.pets >= 2, 10, what="pets")
        feeder.stop(disarm=disarm)
        assert dev.closed.wait(5)
        assert dev.magic_closed is disarm  # V then close, or a close that leaves it armed


def test_a_stalled_loop_stops_the_feeding_at_its_bound():
    clock = Clock()
    pets = []
    device = watchdog.Device("/unused")
    device.pet = lambda: pets.append(clock.t)
    feeder = watchdog.Feeder(device, lambda: None, interval=1, clock=clock)
    feeder.watch("etcd-keepalive", 5.0)
    for _ in range(20):  # the loop marks progress every 3 s: fed all along
        clock.t += 3
        feeder.mark("etcd-keepalive")
        assert feeder.tick() is None
    last = clock.t
    clock.t = last + 5.0  # exactly the bound: still progress
    assert feeder.tick() is None
    clock.t = last + 5.001  # past it: stalled
    assert feeder.tick() == "loop etcd-keepalive made no progress for 5.0s (> 5s)"
    feeder.mark("etcd-keepalive")  # the loop coming back does not revive it
    clock.t += 0.1
    assert feeder.tick() and pets[-1] == last + 5.0 and len(pets) == 21


def test_a_failing_rule_stops_the_feeding():
    device = watchdog.Device("/unused")
    device.pet = lambda: None
    feeder = watchdog.Feeder(device, lambda: 1 / 0, interval=1)
    assert feeder.tick() == "the feeding rule failed: ZeroDivisionError: division by zero"


def test_device_on_a_regular_file_and_a_char_device_double(tmp_path):
    path = tmp_path / "wd-file"
    path.write_bytes(b"")
    dev = watchdog.Device(str(path))
    assert dev.open(7) == 7  # ENOTTY: assumed
    dev.pet()
    dev.pet()
    dev.close(disarm=True)
    assert path.read_bytes() == b"\0\0V"
    null = watchdog.Device("/dev/null")  # a character device without watchdog ioctls
    assert null.open(3) == 3
    null.close(disarm=False)
    # a mistyped path fails, naming it, and creates nothing
    missing = tmp_path / "no-such-watchdog"
    with pytest.raises(watchdog.WatchdogError, match=f"cannot open the watchdog {missing}"):
        watchdog.Device(str(missing)).open(3)
    assert not missing.exists()
