"""sd_notify: READY, STATUS, WATCHDOG, STOPPING, RELOADING.

The protocol is one datagram on $NOTIFY_SOCKET; writing it here keeps the daemons free of
a hard dependency on systemd-python. Without NOTIFY_SOCKET every call is a no-op.
"""
from __future__ import annotations

import os
import socket
import struct


class Notifier:
    def __init__(self, environ=os.environ):
        address = environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval = None
        usec = environ.get("WATCHDOG_USEC")
        pid = environ.get("WATCHDOG_PID")
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2  # ping at half the timeout
        self._sock = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, **fields) -> bool:
        if not self.address:
            return False
        message = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # A datagram socket blocks when the reader's queue is full (10 datagrams by
                # default): a notify socket nobody reads must not hang a reload or the
                # status loop. After a second the message is dropped (STATUS repeats).
                # SO_SNDTIMEO, not settimeout(): the kernel waits for room in the reader's
                # queue; settimeout's poll() reports a unix datagram socket writable while
                # the peer is full, so it spun a core for that second.
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                                      struct.pack("ll", 1, 0))
            self._sock.sendto(message, self.address)
            return True
        except OSError:
            return False

    def ready(self, status: str) -> bool:
        """READY with a first watchdog ping: systemd's watchdog runs from the start, so a
        slow start-up must not leave the first ping a whole interval after READY."""
        return self.send(READY=1, STATUS=status, MAINPID=os.getpid(), WATCHDOG=1)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def stopping(self, status: str = "stopping") -> bool:
        return self.send(STOPPING=1, STATUS=status)
