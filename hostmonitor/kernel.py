"""Kernel-log and hardware findings → the host matrix's inputs and VM notifications.

Where each finding goes (and why):
  * storage_readonly, hung_task, storage_error on the instance storage
    (``[hostmonitor] storage_paths``; a hung task is on it when it has a file open there,
    is the journal thread of its device, or the device has requests in flight that do not
    complete) → the matrix's **storage** input: down while the
    mount is read-only (``ro`` or ``emergency_ro`` in its options; the latter still starts
    with ``rw``) or while the blocked task stays in state D; degraded for ``hold`` seconds
    after a filesystem error. The read-only state of every storage path is also read from
    /proc/self/mountinfo at each evaluation (a safety net for a remount the daemon did not
    see, e.g. before it started). The same finding on another device is logged only.
  * kernel_oops, nic_reset, hardware_error, and the hardware checks
    (``hostmonitor/hardware.py``) → the matrix's **health** input (up / degraded): the
    degraded-host row, whose built-in action is proactive (notify the operator, drain).
  * oom_kill of a qemu process → a **VM notification** for the instance it ran
    (``-uuid`` from its command line): LIFECYCLE / STOPPED_FAILED by default, which is the
    event masakari-engine recovers (stop + start of an HA-enabled instance). libvirt
    reports the same death as STOPPED_FAILED ~1.4 s later through ha-instancemonitor with
    the identical payload, which the API answers 409 (duplicate within 180 s); this one
    still arrives when libvirtd or the instance monitor is down. The UUID is captured
    while the victim still lives: every ``kernel_qemu_scan_interval`` seconds all qemu
    processes are scanned into a pid → UUID map, and the OOM report's first lines
    (``invoked oom-killer``, then ``CPU: N UID: N PID: P Comm: C``) name the task that hit
    the limit, whose command line is read at once when the report is read before the
    kill (~50 ms later here; not guaranteed under load).
Every decision is logged with the kernel line and recorded in the outbox decision.
The conditions are kept in ``<state_path>/hostmonitor-kernel.json`` (with the boot id): a
restart of the daemon does not forget an oops from an hour ago, whose line the resumed
reader will not read again; a reboot does. They are changed by the kmsg thread and read
and expired by the evaluation and status threads: all of it goes through the locked store
of ``hostmonitor/kernel_conditions.py``. What this module reads of /proc (mounts, task
state, open files, command lines) is parsed by ``monitors/procfs.py``.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time

from monitors import log, procfs
from monitors.notification import VM, InvalidNotification, Notification

from hostmonitor import hardware, kmsg, kmsg_rules
from hostmonitor.kernel_conditions import Condition, Conditions

LOG = logging.getLogger(__name__)

UP, DEGRADED, DOWN = "up", "degraded", "down"
_SEVERITY = {UP: 0, DEGRADED: 1, DOWN: 2}
HOST_HEALTH = ("kernel_oops", "nic_reset", "hardware_error")
STORAGE = ("storage_readonly", "storage_error", "hung_task")


# -- the host's devices and qemu processes ------------------------------------------------
def device_name(source: str) -> str:
    return os.path.basename(os.path.realpath(source)) if source.startswith("/dev/") else source


def same_device(kernel_dev: str, mount_dev: str) -> bool:
    """loop3 is loop3; sda (a disk) holds sda1; nvme0n1 holds nvme0n1p2; loop3 not loop30."""
    if kernel_dev == mount_dev:
        return True
    sep = "p" if kernel_dev[-1:].isdigit() else ""
    return re.fullmatch(re.escape(kernel_dev) + sep + r"\d+", mount_dev) is not None


def inflight(device: str) -> int:
    """Requests the block device has in flight (reads + writes), 0 when unknown."""
    try:
        with open(f"/sys/class/block/{device}/inflight", encoding="ascii") as f:
            return sum(int(x) for x in f.read().split())
    except (OSError, ValueError):
        return 0


_DUMP_HEADER = re.compile(r"^CPU: \d+ (?:UID: \d+ )?PID: (\d+) Comm: ")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                   r"[0-9a-fA-F]{12}$")


def qemu_uuid(pid: int) -> str | None:
    """The instance UUID from a qemu command line (``-uuid U``), if it is one."""
    argv = procfs.argv(pid) or []
    for i, arg in enumerate(argv[:-1]):
        if arg == "-uuid" and _UUID.match(argv[i + 1]):
            return argv[i + 1].lower()
    return None


def scan_qemu() -> dict[int, str]:
    """pid → instance UUID of every running qemu process."""
    found = {}
    for pid in procfs.pids():
        if procfs.comm(pid).startswith("qemu"):
            uuid = qemu_uuid(pid)
            if uuid:
                found[pid] = uuid
    return found


class KernelWatcher:
    """Reads /dev/kmsg (push) and the hardware checks; holds the conditions they found.
    Its loops are threads of the source that owns it (``start(owner)``): they end when
    the owner stops."""

    def __init__(self, conf, wake, emit=None):
        self.conf = conf
        self.wake = wake
        self.emit = emit
        self.rules = kmsg_rules.load(conf.hostmonitor.kernel_rules_file)
        self.hardware = hardware.HardwareChecks(conf)
        self.enabled = conf.hostmonitor.kernel_log
        self.hw_enabled = conf.hostmonitor.hardware_check_interval > 0
        self.reader = kmsg.KmsgReader(conf.hostmonitor.kmsg_path,
                                      os.path.join(conf.state_path, "hostmonitor-kmsg.json"))
        self.conditions = Conditions(os.path.join(conf.state_path, "hostmonitor-kernel.json"),
                                     self.reader.boot)
        self.started = False
        self.hw_state, self.hw_findings = UP, []
        self.qemu: dict[int, str] = {}      # pid -> instance UUID
        self._qemu_seen: dict[int, float] = {}  # pid -> when a scan last saw it
        self._scanned = 0.0
        self._oom_pending = False
        # (rule, subject) -> [monotonic time, repeats, led to a condition]
        self.seen: dict[tuple[str, str], list] = {}
        self.records = 0
        self.vm_sent = 0
        self.alive = False
        self.error = ""
        self._lock = threading.Lock()  # the rules and the configuration (reload)
        self._owner = None
        self._hw_now = threading.Event()

    def __bool__(self) -> bool:
        return self.enabled or self.hw_enabled

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, owner) -> None:
        """Read the held conditions, open the kernel log and run the loops as threads of
        ``owner`` (a monitors.source.Source)."""
        self._owner = owner
        self.started = True
        self._load_conditions()
        if self.enabled:
            try:
                self.reader.open()
            except OSError as exc:  # not root, or no /dev/kmsg: the rest keeps running
                self.error = f"cannot read {self.reader.path}: {exc.strerror}"
                LOG.error("kernel log: %s; kernel findings are off", self.error)
            else:
                self._rescan()
                self.alive = True
                owner.spawn(self._kmsg_loop, "hm-kmsg")
        if self.hw_enabled:
            owner.spawn(self._hardware_loop, "hm-hardware")

    def wake_up(self) -> None:
        """Cut the hardware loop's wait short (the owner is stopping)."""
        self._hw_now.set()

    def close(self) -> None:
        """After the owner's threads ended."""
        self.reader.close()

    def reload(self, conf) -> None:
        rules = kmsg_rules.load(conf.hostmonitor.kernel_rules_file)
        with self._lock:
            self.conf, self.rules = conf, rules
            self.hardware = hardware.HardwareChecks(conf)

    def status(self) -> str:
        parts = [f"kernel log: {self.error}"] if self.error else []
        if self.enabled and not self.error:
            parts.append(f"kmsg {self.records} records" + (f", {self.reader.lost} lost"
                                                           if self.reader.lost else ""))
        held = self.conditions.values()
        if held:
            parts.append("kernel " + ",".join(f"{c.finding}:{c.subject}" for c in held))
        if self.hw_state != UP:
            parts.append(f"hardware {self.hw_state}")
        return " ".join(parts)

    # -- threads -----------------------------------------------------------------------------
    def _kmsg_loop(self) -> None:
        try:
            while not self._owner.stopping:
                interval = self.conf.hostmonitor.kernel_qemu_scan_interval
                if time.monotonic() - self._scanned >= interval:  # also under a busy log
                    self._rescan()
                if not self.reader.wait(min(interval, 1.0)):
                    self.expire()
                    continue
                for rec in self.reader.read_available():
                    self.records += 1
                    try:
                        if self.handle(rec):
                            self.reader.commit(rec.seq)  # right after the outbox put
                    except Exception:  # noqa: BLE001 - one bad record never stops reading
                        LOG.exception("kernel log record %d: handling failed", rec.seq)
                self.reader.commit()
        except Exception:  # noqa: BLE001
            LOG.exception("kernel log reader stopped")
        finally:
            self.alive = False

    def _rescan(self) -> None:
        """Refresh the pid → UUID map. A pid that vanished is kept for a minute: the scan
        may run between a kill and the reading of its record (the map is what names it)."""
        now = time.monotonic()
        for pid, uuid in scan_qemu().items():
            self.qemu[pid], self._qemu_seen[pid] = uuid, now
        for pid in [p for p, seen in self._qemu_seen.items() if now - seen > 60]:
            self.qemu.pop(pid, None)
            del self._qemu_seen[pid]
        self._scanned = now

    def _hardware_loop(self) -> None:
        while not self._owner.stopping:
            try:
                state, findings = self.hardware.run()
            except Exception:  # noqa: BLE001
                LOG.exception("hardware checks failed")
                state, findings = UP, []
            if (state, [f.detail for f in findings]) != (self.hw_state,
                                                        [f.detail for f in self.hw_findings]):
                log.event(LOG, logging.WARNING if state != UP else logging.INFO,
                          "hardware health: %s (%s)", state,
                          "; ".join(f"{f.source}: {f.detail}" for f in findings) or "no findings",
                          fields={"HOSTNAME": self.conf.hostname, "HARDWARE_STATE": state})
                self.hw_state, self.hw_findings = state, findings
                self.wake()
            self._hw_now.wait(self.conf.hostmonitor.hardware_check_interval)
            self._hw_now.clear()

    # -- one record ----------------------------------------------------------------------------
    def handle(self, rec: kmsg.Record) -> bool:
        """Decide one record; True when something durable (a notification) came of it."""
        if self._oom_pending:
            m = _DUMP_HEADER.match(rec.text)
            if m:  # the task that ran into the limit, usually the victim, still alive
                self._oom_pending = False
                uuid = qemu_uuid(int(m.group(1)))  # ~0.1 ms; a full scan (~20 ms) here
                if uuid:                            # would delay the kill's own record
                    self.qemu[int(m.group(1))] = uuid
                    self._qemu_seen[int(m.group(1))] = time.monotonic()
                return False
        with self._lock:
            hit = self.rules.match(rec.text)
        if hit is None:
            return False
        rule, groups = hit
        finding = rule.finding
        if finding == "oom_invoked":
            # The victim is chosen and killed ~50-100 ms later, after the report: the next
            # record names the invoking task (`CPU: N UID: N PID: P Comm: C`), usually the
            # victim, whose command line is read at once (others: the periodic scan).
            self._oom_pending = True
            return False
        subject = groups.get("device") or groups.get("iface") or rule.name
        if "pid" in groups:
            subject = f"{groups.get('comm', '?')}:{groups['pid']}"
        if self._repeat(rule, subject):
            return False
        fields = {"HOSTNAME": self.conf.hostname, "KERNEL_RULE": rule.name,
                  "FINDING": finding, "KERNEL_SEQ": rec.seq, "KERNEL_LINE": rec.text}
        if finding == "oom_kill":
            return self._oom_kill(rec, rule, groups, fields)
        if finding in STORAGE:
            where = self._on_storage(finding, groups)
            if where is None:
                log.event(LOG, logging.INFO, "kernel: %s %s (rule %s) is not on the instance "
                          "storage: logged only: %s", finding, subject, rule.name, rec.text,
                          fields=fields)
                return False
            state = DEGRADED if finding == "storage_error" else DOWN
            self._hold("storage", state, rule, subject, rec, groups)
            log.event(LOG, logging.WARNING, "kernel: %s on instance storage %s (%s): storage "
                      "%s: %s", finding, where, subject, state, rec.text, fields=fields)
        else:
            self._hold("health", DEGRADED, rule, subject, rec, groups)
            log.event(LOG, logging.WARNING, "kernel: %s %s (rule %s): host health degraded: "
                      "%s", finding, subject, rule.name, rec.text, fields=fields)
            if finding == "hardware_error":
                self._hw_now.set()  # re-read the counters now
        self.wake()
        return False

    def _repeat(self, rule, subject) -> bool:
        """Storm control: while a finding's condition holds, its repeats are counted into it
        (one notification however many lines); a finding that led to no condition (logged
        only, or an OOM kill) is decided once per rule and subject per ``dedup`` seconds.
        A new occurrence after the condition cleared is a new finding."""
        now = time.monotonic()
        key = (rule.name, subject)
        held = self.conditions.count_repeat((rule.finding, subject))  # counted if held
        seen = self.seen.get(key)
        if not held and seen and seen[2]:
            seen = None  # its condition cleared: this is a new occurrence
        if held or (seen and now - seen[0] < rule.dedup):
            if seen:
                seen[1] += 1
                if now - seen[0] >= rule.dedup:  # a long storm: a count now and then
                    LOG.info("kernel: rule %s on %s: %d repeat(s) counted, not acted on",
                             rule.name, subject, seen[1])
                    self.seen[key] = [now, 0, seen[2]]
            return True
        if seen and seen[1]:
            LOG.info("kernel: rule %s on %s: %d repeat(s) within %gs were counted, not "
                     "acted on", rule.name, subject, seen[1], rule.dedup)
        self.seen[key] = [now, 0, False]  # _hold marks it when a condition comes of it
        return False

    def _hold(self, inp, state, rule, subject, rec, groups) -> None:
        until = None
        if isinstance(rule.hold, float) and rule.hold > 0:
            until = time.monotonic() + rule.hold
        cond = Condition(inp, state, rule.finding, subject, rule.origin, rec.line(), rec.seq,
                         time.time(), until)
        if rule.finding == "hung_task":
            cond.pid = int(groups["pid"])
        self.conditions.hold(cond)
        self.seen.setdefault((rule.name, subject), [time.monotonic(), 0, True])[2] = True

    def _on_storage(self, finding: str, groups: dict) -> str | None:
        """The storage path a finding concerns, or None when it is not instance storage."""
        table = procfs.mounts()
        paths = list(self.conf.hostmonitor.storage_paths)
        if finding == "hung_task":
            pid = int(groups["pid"])
            comm = groups.get("comm", "")
            jbd = re.match(r"jbd2/([^-]+)-", comm)
            for path in paths:
                real = os.path.normpath(os.path.abspath(path))  # no stat: may hang
                m = procfs.mount_of(path, table)
                if jbd and m and same_device(jbd.group(1), device_name(m.source)):
                    return path
                if any(p == real or p.startswith(real.rstrip("/") + "/")
                       for p in procfs.open_paths(pid)):
                    return path
                # blocked before it had a file open (in open(2), waiting for the journal):
                # the storage device has I/O in flight that does not complete
                if m and inflight(device_name(m.source)):
                    return path
            return None
        for path in paths:
            m = procfs.mount_of(path, table)
            if m and same_device(groups["device"], device_name(m.source)):
                return path
        return None

    def _oom_kill(self, rec, rule, groups, fields) -> bool:
        pid, comm = int(groups["pid"]), groups.get("comm", "")
        uuid = qemu_uuid(pid)
        how = "command line"
        if uuid is None and comm.startswith("qemu"):  # a reused pid is not a qemu's
            uuid, how = self.qemu.get(pid), "command line captured before the kill"
        if uuid is None:
            log.event(LOG, logging.WARNING, "kernel: OOM killer killed %s (pid %d), not a "
                      "qemu process of an instance: logged only: %s", comm, pid, rec.text,
                      fields=fields)
            return False
        notification = Notification.create(VM, self.conf.hostname, {
            "event": "LIFECYCLE", "instance_uuid": uuid,
            "vir_domain_event": rule.vir_domain_event})
        decision = {"rule": rule.origin, "kernel_rule": rule.name, "finding": "oom_kill",
                    "kernel_line": rec.line(), "seq": rec.seq, "pid": pid, "comm": comm,
                    "instance_uuid_from": how}
        try:
            result = self.emit(notification, decision=decision)
        except InvalidNotification as exc:
            LOG.error("kernel: OOM kill of %s: %s", uuid, exc)
            return False
        self.vm_sent += 1
        log.event(LOG, logging.WARNING, "kernel: OOM killer killed qemu pid %d of instance %s: "
                  "VM notification %s (%s): %s", pid, uuid, result.id, rule.vir_domain_event,
                  rec.text, fields={**fields, **notification.subject(),
                                    "NOTIFICATION_ID": result.id})
        return True

    # -- the matrix's view -------------------------------------------------------------------
    def expire(self) -> None:
        """Drop conditions whose timer ran out or whose live check says they are over.
        Judged outside the store's lock (the checks read /proc), dropped under it."""
        now, table = time.monotonic(), procfs.mounts()
        over = [(c, why) for c in self.conditions.values()
                if (why := self._over(c, now, table))]
        gone = self.conditions.drop(over) if over else []
        for cond, why in gone:
            LOG.info("kernel: %s %s cleared: %s", cond.finding, cond.subject, why)
        if gone:
            self.wake()

    def _load_conditions(self) -> None:
        self.conditions.load()

    def _over(self, cond: Condition, now: float, table) -> str | None:
        if cond.finding in ("storage_readonly", "storage_error") and not any(
                (m := procfs.mount_of(p, table)) and same_device(cond.subject,
                                                                 device_name(m.source))
                for p in self.conf.hostmonitor.storage_paths):
            return "the device no longer holds a storage path"  # unmounted, reconfigured
        if cond.until is not None and now >= cond.until:
            return "hold time over"
        if cond.finding == "hung_task" and procfs.state(cond.pid) != "D":
            return "the task is no longer blocked"
        if cond.finding == "storage_readonly" and not self._still_read_only(cond.subject):
            return "the filesystem is writable again"
        return None

    def _still_read_only(self, device: str) -> bool:
        return any(same_device(device, device_name(m.source)) and procfs.read_only(m.options)
                   for m in procfs.mounts())

    def storage(self) -> tuple[str, list[dict]]:
        """The storage input from the kernel: conditions, and read-only storage mounts."""
        self.expire()
        evidence = [c.evidence() for c in self.conditions.values() if c.input == "storage"]
        state = max([UP] + [c["state"] for c in evidence], key=_SEVERITY.get)
        table = procfs.mounts()
        for path in self.conf.hostmonitor.storage_paths:
            m = procfs.mount_of(path, table)
            if m and procfs.read_only(m.options):
                state = DOWN
                evidence.append({"finding": "mounted read-only", "subject": path,
                                 "state": DOWN, "mount": m.point, "device": m.source,
                                 "options": ",".join(sorted(m.options))})
        return state, evidence

    def health(self) -> tuple[str, list[dict]]:
        """The degraded-host input: kernel health findings and the hardware checks."""
        self.expire()
        evidence = [c.evidence() for c in self.conditions.values() if c.input == "health"]
        evidence += [{"finding": "hardware", "source": f.source, "detail": f.detail}
                     for f in self.hw_findings]
        return (DEGRADED if evidence else UP), evidence
