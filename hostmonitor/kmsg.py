"""The kernel log as a stream: ``/dev/kmsg`` pushes one record per read(2), in order.

Why /dev/kmsg and not dmesg/syslog: it is the kernel's own ring buffer with a sequence
number per record, readable without any daemon in between, and a blocking read (here: a
poll) wakes as soon as the kernel logs. A record is ``prio,seq,usec,flags[,...];text``;
continuation lines (`` KEY=value``) follow the text after a newline and are ignored.

Resume: the last handled sequence number is kept with the boot id in
``<state_path>/hostmonitor-kmsg.json``. After a restart in the same boot the reader starts
at the oldest record still in the buffer and skips every ``seq <= last`` (nothing read
twice); if the first record it sees is beyond ``last + 1`` the buffer was overwritten
meanwhile and the gap is counted and logged (nothing missed silently). After a reboot the
whole buffer of the new boot is new. On the very first start (no state) it starts at the
end: what the kernel said before the monitor ever ran is not replayed as a fresh fault.

EPIPE from read(2) means the kernel overwrote records this reader had not read yet; the
next read returns the oldest one still there: the gap is counted the same way.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import select
import time

from monitors import procfs, statefile

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Record:
    seq: int
    level: int        # 0 emerg ... 7 debug
    facility: int     # 0 kernel, 1 user (injected through /dev/kmsg writes)
    usec: int         # CLOCK_MONOTONIC-ish time since boot
    text: str

    def line(self) -> str:
        """The line as dmesg prints it (for the journal and the outbox history)."""
        return f"[{self.usec / 1e6:12.6f}] {self.text}"


def parse(raw: bytes) -> Record | None:
    """One /dev/kmsg record; None for something that is not one."""
    head, sep, rest = raw.partition(b";")
    if not sep:
        return None
    fields = head.split(b",")
    try:
        prio, seq, usec = int(fields[0]), int(fields[1]), int(fields[2])
    except (IndexError, ValueError):
        return None
    text = rest.split(b"\n", 1)[0].decode("utf-8", "replace")
    # the kernel escapes non-printable bytes as \xNN; a newline inside a record stays one
    text = text.replace("\\x0a", " ").strip()
    return Record(seq, prio & 7, prio >> 3, usec, text)


class KmsgReader:
    """Reads records after the last committed one; ``commit`` makes progress durable."""

    def __init__(self, path: str, state_file: str, boot_id_path: str = procfs.BOOT_ID_PATH):
        self.path = path
        self.state_file = state_file
        self.boot = procfs.boot_id(boot_id_path)
        self.fd: int | None = None
        self.last = 0            # last sequence number handed out
        self.committed = 0       # last sequence number written to the state file
        self.skip_until = 0      # resume: records up to this one were handled before
        self.lost = 0            # records overwritten before we read them
        self.started_from = "end"

    # -- opening and resuming ------------------------------------------------------------
    def _load(self) -> dict:
        try:
            return statefile.read(self.state_file) or {}
        except statefile.StateFileError as exc:
            LOG.warning("%s; reading the kernel log from its end", exc)
            return {}

    def open(self) -> None:
        state = self._load()
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if state.get("boot_id") == self.boot and isinstance(state.get("seq"), int):
            self.skip_until = self.committed = self.last = state["seq"]
            self.started_from = f"after record {state['seq']} (resumed)"
            os.lseek(self.fd, 0, os.SEEK_SET)
        elif state:
            self.started_from = "the start of the buffer (new boot)"
            os.lseek(self.fd, 0, os.SEEK_SET)
        else:
            self.started_from = "the end of the buffer (first start)"
            os.lseek(self.fd, 0, os.SEEK_END)
            # nothing read yet: the first record's seq tells where we are
        LOG.info("kernel log %s: reading from %s", self.path, self.started_from)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    # -- reading -------------------------------------------------------------------------
    def wait(self, timeout: float) -> bool:
        """True when a record can be read (push: poll wakes when the kernel logs)."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(max(0.0, timeout) * 1000))

    def read_available(self, limit: int = 10000) -> list[Record]:
        """Every record available now (up to ``limit``), in order, none twice."""
        out: list[Record] = []
        while len(out) < limit:
            try:
                raw = self._read_raw()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten under us: next read goes on
                    LOG.warning("kernel log: records were overwritten before they were read")
                    continue
                if exc.errno == errno.EINVAL:  # a record larger than our buffer: cannot be
                    continue
                raise
            if not raw:
                break
            rec = parse(raw)
            if rec is None:
                continue
            if rec.seq <= self.skip_until:
                continue  # handled before the restart
            expected = self.last + 1
            if self.last and rec.seq > expected:
                gap = rec.seq - expected
                self.lost += gap
                LOG.warning("kernel log: %d record(s) (seq %d..%d) were overwritten in the "
                            "ring buffer before they could be read", gap, expected,
                            rec.seq - 1)
            self.last = rec.seq
            out.append(rec)
        return out

    def _read_raw(self) -> bytes:
        return os.read(self.fd, 8192)  # one record per read(2)

    def commit(self, seq: int | None = None) -> None:
        """Make progress durable: records up to ``seq`` (default: all read) are handled."""
        seq = self.last if seq is None else seq
        if seq <= self.committed:
            return
        try:
            statefile.write(self.state_file, {"boot_id": self.boot, "seq": seq,
                                              "updated_at": time.time()})
            self.committed = seq
        except OSError as exc:
            LOG.warning("cannot write %s: %s", self.state_file, exc)
