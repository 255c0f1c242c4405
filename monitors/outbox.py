"""The durable outbox: every detected failure is written here first, and leaves only when
a driver's recipient acknowledged it.

Storage only: put, claim, finish, query, and the file's own integrity (quarantine,
salvage, carry-over). What an answer means for a row (retry when, expired, the gate) is
the delivery worker's decision (monitors.delivery); the outbox stores what it is given.

One SQLite file per host (WAL, mode 0600) shared by all daemons and the CLI. Detections
are committed with synchronous=FULL (on disk when put() returns); claims and answers
without their own fsync (see _write()). With a group (``[DEFAULT] state_group``, e.g.
haclient for Pacemaker's alert agent run as hacluster) the directory is setgid 2770 in
that group and the database, -wal and -shm are 0660, so members can hand notifications
over; SQLite gives -wal and -shm the mode (and, as root, the owner) of the database. Rows
are claimed with a lease naming the claiming process, so several processes can deliver
concurrently without double-claiming, and a row claimed by a process that died is taken
over at once (its owner lock is free, monitors.owners: judged the same from every PID
namespace sharing the state directory) instead of waiting for the lease to run out.
Everything operators see (history, status, metrics) is read from these tables, through
``query()``, by the read model in monitors/history.py.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import grp
import json
import logging
import os
import sqlite3
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from monitors.notification import Notification
from monitors import owners
from monitors.procfs import BOOT_ID, boot_clock
from monitors.states import Outcome, State

# The caller's judgement of a candidate row before a claim (monitors.recipient.withdrawal):
# a reason dict withdraws it, None lets it be claimed.
Withdraw = Callable[["Candidate"], "dict | None"]

LOG = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id             INTEGER PRIMARY KEY,
    created_at     REAL    NOT NULL,
    type           TEXT    NOT NULL,
    hostname       TEXT    NOT NULL,
    generated_time TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    priority       INTEGER NOT NULL,
    dedup_key      TEXT    NOT NULL,
    order_key      TEXT    NOT NULL,
    source         TEXT    NOT NULL,
    decision       TEXT    NOT NULL DEFAULT '{}',
    state          TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_created ON notifications (created_at);
CREATE INDEX IF NOT EXISTS notifications_pending_order
    ON notifications (order_key, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS notifications_order ON notifications (order_key, id);
CREATE TABLE IF NOT EXISTS deliveries (
    id              INTEGER PRIMARY KEY,
    notification_id INTEGER NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    driver          TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    priority        INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    lease_owner     TEXT,
    lease_until     REAL,
    remote_id       TEXT,
    last_status     INTEGER,
    last_message    TEXT,
    updated_at      REAL    NOT NULL,
    stage           INTEGER NOT NULL DEFAULT 0,
    UNIQUE (notification_id, driver)
);
CREATE INDEX IF NOT EXISTS deliveries_ready
    ON deliveries (priority, id) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS history (
    id              INTEGER PRIMARY KEY,
    notification_id INTEGER NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    delivery_id     INTEGER,
    at              REAL    NOT NULL,
    kind            TEXT    NOT NULL,
    detail          TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS history_notification ON history (notification_id);
CREATE TABLE IF NOT EXISTS probe (
    daemon TEXT PRIMARY KEY,
    at     REAL NOT NULL
);
"""
# What the recipient did with a delivered notification (monitors/follow.py asks, at a low
# rate, bounded): one row per followed delivery, claimed with a lease like a delivery so
# several processes sharing the outbox never poll one notification together. ``ended``:
# NULL while followed, 'final' (a final status was seen) or 'bound' (given up).
_RECOVERY_SCHEMA = """
CREATE TABLE IF NOT EXISTS recoveries (
    delivery_id     INTEGER PRIMARY KEY REFERENCES deliveries (id) ON DELETE CASCADE,
    notification_id INTEGER NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    driver          TEXT    NOT NULL,
    remote_id       TEXT    NOT NULL,
    delivered_at    REAL    NOT NULL,
    status          TEXT,
    polls           INTEGER NOT NULL DEFAULT 0,
    next_at         REAL    NOT NULL,
    ended           TEXT,
    last_error      TEXT,
    lease_owner     TEXT,
    lease_until     REAL,
    updated_at      REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS recoveries_due ON recoveries (next_at) WHERE ended IS NULL;
CREATE INDEX IF NOT EXISTS recoveries_notification ON recoveries (notification_id);
CREATE INDEX IF NOT EXISTS deliveries_answered
    ON deliveries (updated_at) WHERE state = 'delivered' AND remote_id IS NOT NULL;
"""
# Columns added after the first release: (table, column, declaration), added to an older
# file when it is opened.
_ADDED_COLUMNS = (
    # CLOCK_BOOTTIME at detection and the boot it belongs to: a row's age for [delivery]
    # max_age, immune to wall-clock steps (NTP, an operator's date -s) within one boot.
    ("notifications", "created_boot", "REAL"),
    ("notifications", "boot_id", "TEXT"),
    # put()'s ``first``: a delivery waits for the earlier stages of its notification.
    ("deliveries", "stage", "INTEGER NOT NULL DEFAULT 0"),
    # The driver's last answer classified (monitors.states.Outcome), so readers need not
    # parse the message text. In a file from before it, a pending row's is filled in by
    # its next answer (a held row: within [delivery] held_retry_interval).
    ("deliveries", "last_outcome", "TEXT"),
)


def _share_with_group(directory: str, path: str, group: str) -> None:
    """Directory setgid 2770 and the database files 0660, all in ``group``. Whoever owns a
    file fixes its mode and group (the daemons, root, at start: no chown is needed since the
    setgid directory hands its group down); anyone else only checks, and says what is wrong
    rather than failing later inside SQLite."""
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise PermissionError(f"[DEFAULT] state_group: no group named {group!r}") from None
    os.makedirs(directory, mode=0o770, exist_ok=True)
    _fix(directory, gid, 0o2770, "directory")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o660)
    os.close(fd)
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name):
            _fix(name, gid, 0o660, "file")


def _fix(name: str, gid: int, mode: int, what: str) -> None:
    st = os.stat(name)
    if st.st_gid == gid and st.st_mode & 0o7777 == mode:
        return
    if st.st_uid != os.geteuid() and os.geteuid() != 0:
        if st.st_gid == gid and st.st_mode & mode == mode:
            return  # more open than needed, but usable
        raise PermissionError(
            f"{name}: {what} is {st.st_mode & 0o7777:04o} group {st.st_gid}, needs "
            f"{mode:04o} group {gid} for [DEFAULT] state_group (start a daemon once, or "
            f"chgrp/chmod it as root)")
    if st.st_gid != gid:
        os.chown(name, -1, gid)
    os.chmod(name, mode)


@dataclasses.dataclass(frozen=True)
class Claim:
    """One delivery reserved for this process: send it, then finish() it."""
    delivery_id: int
    notification_id: int
    driver: str
    attempt: int
    created_at: float
    notification: Notification
    created_boot: float | None = None
    boot_id: str | None = None

    def age(self) -> float:
        """Seconds since detection: by the boot clock when detected in this boot (a
        wall-clock step cannot age or rejuvenate it), else by the wall clock."""
        if self.created_boot is not None and self.boot_id == BOOT_ID:
            return max(boot_clock() - self.created_boot, 0.0)
        return time.time() - self.created_at


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A pending delivery about to be claimed, as shown to the caller's ``withdraw``:
    ``later()`` the subject's newer notifications (id, type, payload), ``before()`` the
    subject's previous notification to the same driver (id, that delivery's state); both
    query only when called."""
    id: int
    type: str
    payload: dict
    driver: str
    later: Callable[[], Iterable[tuple[int, str, dict]]]
    before: Callable[[], "tuple[int, str] | None"]


@dataclasses.dataclass(frozen=True)
class FollowUp:
    """One delivered notification whose recovery this process asks about next (reserved
    by claim_follow_up(), then record_follow_up())."""
    delivery_id: int
    notification_id: int
    driver: str
    remote_id: str
    delivered_at: float
    status: str | None
    polls: int
    last_error: str | None


@dataclasses.dataclass(frozen=True)
class PutResult:
    id: int
    queued: bool  # False: an identical notification was already pending (deduplicated)


class Outbox:
    def __init__(self, path: str, busy_timeout: float = 30.0, group: str | None = None):
        self.path = path
        self.busy_timeout = busy_timeout
        directory = os.path.dirname(os.path.abspath(path))
        self.group = group
        if group:
            _share_with_group(directory, path, group)
        else:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        self._lock = threading.RLock()
        self._changed = threading.Condition(threading.Lock())
        self.recovered: str | None = None  # what the last recovery did, for the operator
        self._reopening = False
        self._owner: str | None = None
        self._open()

    @property
    def owner(self) -> str:
        """This process's name in leases and history: its owner lock in the outbox's
        directory (monitors.owners), taken on first use, so a process that only put()s
        (the alert agent) or reads makes none. Tests may name another owner."""
        return self._owner or owners.identity(self._directory)

    @owner.setter
    def owner(self, value: str) -> None:
        self._owner = value

    @property
    def _directory(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def _alive(self, owner: str) -> bool:
        """Whether a lease's owner still runs (this process does)."""
        return owner == self.owner or owners.alive(owner, self._directory)

    # -- opening, and what to do when the file is not what it should be ---------------------
    def _connect(self) -> None:
        if self.group:  # 0660 in the group (also a fresh file after a quarantine)
            _share_with_group(os.path.dirname(os.path.abspath(self.path)), self.path,
                              self.group)
        else:
            # Create the file 0600 ourselves: SQLite gives -wal and -shm the same mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                             check_same_thread=False)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, (_SCHEMA + _RECOVERY_SCHEMA).split(";")):
                    db.execute(statement)
                for table, column, decl in _ADDED_COLUMNS:
                    have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
                    if column not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
                db.execute("SELECT COUNT(*) FROM notifications").fetchone()
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        st = os.stat(self.path)
        self._db, self._identity, self._durable = db, (st.st_dev, st.st_ino), True

    def _open(self, carried: list[dict] | None = None) -> None:
        """Open (or create) the file; a file that is not a readable SQLite database is
        moved aside with a timestamp, a fresh outbox started, and every row that can still
        be read from it queued again. Storage errors (full, read-only, locked) are raised:
        they are not the file's fault."""
        try:
            self._connect()
        except sqlite3.DatabaseError as exc:
            if not _corrupt(exc):
                raise
            carried = (carried or []) + self._quarantine(exc)
            if not hasattr(self, "_db"):
                self._connect()
        if carried:
            n = self._import(carried)
            self.recovered = (self.recovered or "") + f"; {n} pending notification(s) " \
                                                      "carried over"
            LOG.error("outbox %s: %s", self.path, self.recovered.lstrip("; "))

    def _quarantine(self, exc: BaseException) -> list[dict]:
        """Move the corrupt file aside (under a lock, so two processes finding it at once
        move it only once) and salvage its pending rows."""
        mode = 0o660 if self.group else 0o600
        with open(os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, mode)) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:  # another process may have replaced it meanwhile
                self._connect()
                return []
            except sqlite3.DatabaseError as again:
                if not _corrupt(again):
                    raise
            aside = f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.path + suffix, aside + suffix)
            rows = _salvage_file(aside)
            self._connect()
        text = (f"outbox file was not a readable database ({exc}): moved aside to {aside}, "
                f"a fresh outbox started; {len(rows)} pending notification(s) could be read "
                "from it")
        LOG.error("outbox %s: %s", self.path, text)
        self.recovered = f"{self.recovered}; {text}" if self._reopening else text
        return rows

    def _import(self, rows: list[dict]) -> int:
        n = 0
        for row in rows:
            try:
                result = self.put(_notification(row), source=row["source"],
                                  drivers=row["drivers"],
                                  decision={**row["decision"], "carried_over": row["from"]})
            except Exception as exc:  # noqa: BLE001 - one bad row must not stop the rest
                LOG.error("outbox: row %s could not be carried over: %s", row.get("id"), exc)
                continue
            n += result.queued
        return n

    def check_file(self) -> str | None:
        """Is the file at ``path`` still the one this connection writes? When it was
        deleted or replaced while we run (the two would never meet again), carry our pending
        rows over to what is at ``path`` now (a new outbox if nothing is) and use that.
        Returns what was done, for the log and status; None when nothing happened."""
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                return None
            what = "replaced"
        except FileNotFoundError:
            what = "deleted"
        with self._lock:
            old = self._db
            try:
                rows = _salvage(old, f"the {what} file")
            except sqlite3.Error as exc:
                LOG.error("outbox: reading the %s file failed: %s", what, exc)
                rows = []
            with _keep_names(self.path):  # closing must not unlink the new file's WAL/shm
                with contextlib.suppress(sqlite3.Error):
                    old.close()
            del self._db
            self.recovered = f"outbox {self.path} was {what} while running: reopened"
            self._reopening = True
            try:
                self._open(carried=rows)
            finally:
                self._reopening = False
            if not rows:
                LOG.error("%s; no pending notification to carry over", self.recovered)
        self.wake()
        return self.recovered

    def probe(self, name: str) -> None:
        """A write and a read (the daemon's watchdog round). A corrupt file is recovered."""
        try:
            with self._write() as db:
                db.execute("INSERT INTO probe (daemon, at) VALUES (?, ?) ON CONFLICT (daemon) "
                           "DO UPDATE SET at = excluded.at", (name, time.time()))
            self._read("SELECT COUNT(*) FROM notifications WHERE state = 'pending'")
        except sqlite3.DatabaseError as exc:
            if not _corrupt(exc):
                raise
            with self._lock:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                del self._db
                self._open()

    # -- plumbing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken up front, so two processes
        can never both read a row as free and both claim it.

        durable (the default): the commit is on disk when this returns (WAL fsynced,
        synchronous=FULL), so a power loss right after cannot take it back. Claims and
        answers are written with durable=False (synchronous=NORMAL: committed, safe from a
        SIGKILL, on disk at the next durable commit or checkpoint): a power loss can only
        take back the last of them, and then the row is pending again and re-sent, and
        the recipient answers the re-send 409 duplicate (generated_time is fixed at
        detection), which counts as delivered."""
        with self._lock:
            if durable != self._durable:
                self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._durable = durable
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait(self, timeout: float) -> None:
        """Sleep until this process queues something, or timeout (other processes' rows
        are found by the caller's next poll)."""
        with self._changed:
            self._changed.wait(timeout)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @staticmethod
    def _history(db, notification_id, kind, detail=None, delivery_id=None, at=None):
        db.execute("INSERT INTO history (notification_id, delivery_id, at, kind, detail) "
                   "VALUES (?, ?, ?, ?, ?)",
                   (notification_id, delivery_id, at or time.time(), kind,
                    json.dumps(detail or {}, sort_keys=True)))

    @staticmethod
    def _refresh_state(db, notification_id) -> str:
        states = {r[0] for r in db.execute(
            "SELECT state FROM deliveries WHERE notification_id = ?", (notification_id,))}
        for state in (State.PENDING, State.REJECTED, State.EXPIRED, State.SUPERSEDED):
            if state in states:
                break
        else:
            state = State.DELIVERED
        db.execute("UPDATE notifications SET state = ? WHERE id = ?", (state, notification_id))
        return state

    # -- writing ----------------------------------------------------------------------------
    def put(self, notification: Notification, *, source: str, drivers: Iterable[str],
            decision: dict | None = None, first: Iterable[str] = (),
            not_before: dict[str, float] | None = None) -> PutResult:
        """Durably record a detection (committed with synchronous=FULL before returning).
        A repeat of the latest pending notification of the same subject (VM, process or
        host) is not queued twice; it is written into that row's history so flapping stays
        visible. Only the latest: after STOPPED, STARTED, a new STOPPED must be queued, or
        the recipient would end on STARTED. And only if that row is for (at least) the same
        drivers.

        first: drivers whose delivery must be answered before the others of this row are
        attempted (e.g. Nova's force-down before the Masakari notification); see claim()'s
        stage_hold for the bound on that wait.

        not_before: per driver, the wall-clock time before which its delivery is not due
        (a decision made by the caller, e.g. monitors.recipient.distinct)."""
        drivers = list(dict.fromkeys(drivers))
        first = set(first)
        if not drivers:
            raise ValueError("a notification needs at least one driver")
        now = time.time()
        key = notification.dedup_key()
        with self._write() as db:
            row = db.execute("SELECT id, dedup_key FROM notifications WHERE order_key = ? "
                             "AND state = 'pending' ORDER BY id DESC LIMIT 1",
                             (notification.order_key(),)).fetchone()
            if row is not None and row["dedup_key"] == key and set(drivers) <= {
                    r[0] for r in db.execute("SELECT driver FROM deliveries WHERE "
                                             "notification_id = ?", (row["id"],))}:
                # Only when the pending row goes to every recipient this one is for: a
                # Masakari-bound repeat of a webhook-only row must still reach Masakari.
                self._history(db, row["id"], "duplicate", {
                    "source": source, "generated_time": notification.time_text,
                    "decision": decision or {}}, at=now)
                return PutResult(row["id"], False)
            cur = db.execute(
                "INSERT INTO notifications (created_at, type, hostname, generated_time, payload,"
                " priority, dedup_key, order_key, source, decision, state, created_boot,"
                " boot_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (now, notification.type, notification.hostname, notification.time_text,
                 json.dumps(notification.payload, sort_keys=True), notification.priority, key,
                 notification.order_key(), source, json.dumps(decision or {}, sort_keys=True),
                 State.PENDING, boot_clock(), BOOT_ID))
            nid = cur.lastrowid
            for driver in drivers:
                db.execute("INSERT INTO deliveries (notification_id, driver, state, priority,"
                           " next_attempt_at, updated_at, stage) VALUES (?,?,?,?,?,?,?)",
                           (nid, driver, State.PENDING, notification.priority,
                            max(now, (not_before or {}).get(driver, now)), now,
                            0 if driver in first else 1))
            detail = {"source": source, "drivers": drivers, "decision": decision or {}}
            if first & set(drivers):
                detail["first"] = sorted(first & set(drivers))
            held = {d: t for d, t in (not_before or {}).items() if d in drivers and t > now}
            if held:
                detail["not_before"] = held
            self._history(db, nid, "detected", detail, at=now)
        self.wake()
        return PutResult(nid, True)

    def _release_dead_leases(self, db, now: float) -> None:
        held = [r[0] for r in db.execute(
            "SELECT DISTINCT lease_owner FROM deliveries WHERE state = 'pending' "
            "AND lease_until > ?", (now,))]
        for owner in held:
            if not self._alive(owner):
                db.execute("UPDATE deliveries SET lease_owner = NULL, lease_until = NULL "
                           "WHERE state = 'pending' AND lease_owner = ?", (owner,))

    def claim(self, drivers: Iterable[str], lease: float,
              notification_id: int | None = None,
              stage_hold: float | None = None, withdraw: Withdraw | None = None
              ) -> Claim | None:
        """Reserve the most urgent due delivery (priority, then age) for this process.

        A delivery waits while a delivery of the same notification in an earlier stage
        (put()'s ``first``) is pending, for at most stage_hold seconds after the detection
        (None: without bound).

        Retry times and leases are wall-clock times (shared by processes). A delivery
        last touched "in the future" (updated_at > now) was scheduled before the clock
        stepped back: it counts as due and unleased instead of stalling for the size of
        the step. (A step forward only makes rows due early, or a lease end early: the
        re-send is answered 409 duplicate, as after a crash.)

        withdraw: the caller's judgement of a candidate (monitors.recipient.withdrawal):
        a reason dict means the row is stale; its pending deliveries become superseded
        (only this driver's with ``driver_only``), the reason goes into its history, and
        the next candidate is looked at."""
        drivers = list(drivers)
        if not drivers:
            return None
        with self._write(durable=False) as db:
            return self._claim(db, drivers, lease, notification_id, stage_hold, withdraw)

    def _claim(self, db, drivers: list[str], lease: float, notification_id: int | None,
               stage_hold: float | None, withdraw: Withdraw | None = None) -> Claim | None:
        now = time.time()
        marks = ",".join("?" * len(drivers))
        # Per subject, FIFO: a STARTED never overtakes the STOPPED queued before it, even
        # with several delivery threads or processes; different subjects go in parallel.
        where = (f"d.state = 'pending' AND d.driver IN ({marks}) "
                 "AND (d.next_attempt_at <= ? OR d.updated_at > ?) "
                 "AND (d.lease_until IS NULL OR d.lease_until <= ? OR d.updated_at > ?) "
                 "AND NOT EXISTS (SELECT 1 FROM notifications n2 JOIN deliveries d2 "
                 "ON d2.notification_id = n2.id WHERE n2.state = 'pending' "
                 "AND n2.order_key = n.order_key AND n2.id < n.id "
                 "AND d2.driver = d.driver AND d2.state = 'pending') "
                 "AND NOT EXISTS (SELECT 1 FROM deliveries d3 WHERE d3.notification_id = "
                 "d.notification_id AND d3.stage < d.stage AND d3.state = 'pending' "
                 "AND n.created_at > ?)")
        hold_since = 0.0 if stage_hold is None else now - stage_hold
        args: list[Any] = [*drivers, now, now + 1.0, now, now + 1.0, hold_since]
        if notification_id is not None:
            where += " AND d.notification_id = ?"
            args.append(notification_id)
        self._release_dead_leases(db, now)
        while True:
            row = db.execute(
                "SELECT d.id AS did, d.attempts, d.driver, n.* FROM deliveries d "
                f"JOIN notifications n ON n.id = d.notification_id WHERE {where} "
                "ORDER BY d.priority, d.id LIMIT 1", args).fetchone()
            if row is None:
                return None
            if withdraw is None or not self._withdraw(db, row, withdraw, now):
                break
        attempt = row["attempts"] + 1
        db.execute("UPDATE deliveries SET attempts = ?, lease_owner = ?, lease_until = ?,"
                   " updated_at = ? WHERE id = ?",
                   (attempt, self.owner, now + lease, now, row["did"]))
        self._history(db, row["id"], "attempt", {"driver": row["driver"],
                                                 "attempt": attempt, "by": self.owner},
                      delivery_id=row["did"], at=now)
        return Claim(row["did"], row["id"], row["driver"], attempt, row["created_at"],
                     _notification(row), row["created_boot"], row["boot_id"])

    def finish(self, claim: Claim, outcome: str, *, state: str | None = None,
               status: int | None = None, remote_id: str | None = None,
               message: str = "", retry_in: float = 0.0,
               next_attempt_at: float | None = None) -> str:
        """Record a driver's answer (``Outcome``) and what the worker decided from it: the
        delivery's new ``state`` (by default: delivered for delivered/duplicate, rejected
        for rejected, else pending) and, if pending, when to ask again (``retry_in``
        seconds from now, recorded in the history; ``next_attempt_at`` when the row is
        due, if not then). Returns the state stored."""
        with self._write(durable=False) as db:
            state = self._finish(db, claim, outcome, state, status, remote_id, message,
                                 retry_in, next_attempt_at)
        self.wake()  # a delivery held behind this one (a later stage) may go now
        return state

    def finish_and_claim(self, claim: Claim, outcome: str, *, state: str | None = None,
                         status: int | None = None, remote_id: str | None = None,
                         message: str = "", retry_in: float = 0.0,
                         next_attempt_at: float | None = None,
                         drivers: Iterable[str] = (), lease: float = 60.0,
                         stage_hold: float | None = None, withdraw: Withdraw | None = None
                         ) -> tuple[str, Claim | None]:
        """finish() and the next claim() in one transaction (one commit instead of two
        while a backlog drains). Returns (the state stored, the next claim or None)."""
        drivers = list(drivers)
        with self._write(durable=False) as db:
            state = self._finish(db, claim, outcome, state, status, remote_id, message,
                                 retry_in, next_attempt_at)
            following = self._claim(db, drivers, lease, None, stage_hold, withdraw) \
                if drivers else None
        self.wake()
        return state, following

    def _finish(self, db, claim: Claim, outcome: str, state: str | None,
                status: int | None, remote_id: str | None, message: str,
                retry_in: float, next_attempt_at: float | None) -> str:
        now = time.time()
        if next_attempt_at is None:
            next_attempt_at = now + retry_in
        if state is None:
            outcome = Outcome(outcome)
            state = (State.DELIVERED if outcome.accepted
                     else State.REJECTED if outcome == Outcome.REJECTED else State.PENDING)
        state = State(state)
        message = message[:2000]
        db.execute(
            "UPDATE deliveries SET state = ?, next_attempt_at = ?, lease_owner = NULL,"
            " lease_until = NULL, remote_id = COALESCE(?, remote_id), last_status = ?,"
            " last_message = ?, last_outcome = ?, updated_at = ? WHERE id = ?",
            (state, next_attempt_at, remote_id, status, message, str(outcome), now,
             claim.delivery_id))
        detail = {"driver": claim.driver, "attempt": claim.attempt, "outcome": str(outcome),
                  "status": status, "message": message, "state": str(state)}
        if remote_id:
            detail["remote_id"] = remote_id
        if state == State.PENDING:
            detail["retry_in"] = round(retry_in, 3)
        self._history(db, claim.notification_id, "answer", detail,
                      delivery_id=claim.delivery_id, at=now)
        self._refresh_state(db, claim.notification_id)
        return state

    def _withdraw(self, db, row: sqlite3.Row, withdraw: Withdraw, now: float) -> bool:
        """Show the candidate to ``withdraw`` (the queries it may ask for run only when
        asked); when it answers with a reason, store the withdrawal. True: withdrawn."""
        order_key, nid, driver = row["order_key"], row["id"], row["driver"]

        def later():
            for r in db.execute("SELECT id, type, payload FROM notifications WHERE "
                                "order_key = ? AND id > ? ORDER BY id", (order_key, nid)):
                yield r["id"], r["type"], json.loads(r["payload"])

        def before():
            r = db.execute("SELECT n.id, d.state FROM notifications n JOIN deliveries d ON "
                           "d.notification_id = n.id WHERE n.order_key = ? AND n.id < ? AND "
                           "d.driver = ? ORDER BY n.id DESC LIMIT 1",
                           (order_key, nid, driver)).fetchone()
            return None if r is None else (r["id"], r["state"])

        reason = withdraw(Candidate(nid, row["type"], json.loads(row["payload"]), driver,
                                    later, before))
        if not reason:
            return False
        reason = dict(reason)
        only = ("", ())
        if reason.pop("driver_only", False):
            only = (" AND driver = ?", (driver,))
        cur = db.execute("UPDATE deliveries SET state = ?, lease_owner = NULL, lease_until = "
                         "NULL, updated_at = ? WHERE notification_id = ? AND state = "
                         f"'pending'{only[0]}", (State.SUPERSEDED, now, nid, *only[1]))
        self._history(db, nid, "superseded", {**reason, "deliveries": cur.rowcount}, at=now)
        self._refresh_state(db, nid)
        return True

    def note(self, notification_id: int, kind: str, detail: dict) -> None:
        """Add what was done about a notification to its history (e.g. the fencing
        request that followed a host verdict), so `ha-monitors history` shows it."""
        with self._write() as db:
            self._history(db, notification_id, kind, detail)

    def acknowledge(self, notification_id: int, note: str = "") -> int:
        """Operator action: a rejected/expired notification was seen and handled some other
        way; it stays (with its history) but no longer makes ``status`` CRITICAL."""
        with self._write() as db:
            row = db.execute("SELECT state FROM notifications WHERE id = ?",
                             (notification_id,)).fetchone()
            if row is None or row["state"] not in (State.REJECTED, State.EXPIRED):
                return 0
            self._history(db, notification_id, "acknowledged",
                          {"state": row["state"], "note": note, "by": self.owner})
        return 1

    def retry(self, notification_id: int) -> int:
        """Operator action: put rejected/expired deliveries back in the queue."""
        now = time.time()
        with self._write() as db:
            cur = db.execute("UPDATE deliveries SET state = 'pending', next_attempt_at = ?,"
                             " updated_at = ? WHERE notification_id = ? AND state IN "
                             "('rejected', 'expired')", (now, now, notification_id))
            if cur.rowcount:
                self._history(db, notification_id, "retry", {"deliveries": cur.rowcount})
                self._refresh_state(db, notification_id)
        self.wake()
        return cur.rowcount

    def purge_delivered(self, before: float) -> int:
        with self._write() as db:
            cur = db.execute("DELETE FROM notifications WHERE state = 'delivered' AND "
                             "created_at < ?", (before,))
        return cur.rowcount

    def apply_retention(self, before: float) -> int:
        """Delete finished notifications (delivered, superseded) created before ``before``,
        with their deliveries and history; never pending, rejected or expired ones."""
        with self._write() as db:
            cur = db.execute("DELETE FROM notifications WHERE state IN ('delivered', "
                             "'superseded') AND created_at < ?", (before,))
        return cur.rowcount

    # -- reading ----------------------------------------------------------------------------
    def next_due(self, drivers: Iterable[str]) -> float | None:
        drivers = list(drivers)
        # A delivery held behind an earlier stage is not due: it is woken by finish().
        rows = self._read("SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, 0))) "
                          f"FROM deliveries d WHERE state = 'pending' AND driver IN "
                          f"({','.join('?' * len(drivers))}) AND NOT EXISTS (SELECT 1 FROM "
                          "deliveries d3 WHERE d3.notification_id = d.notification_id AND "
                          "d3.stage < d.stage AND d3.state = 'pending')", drivers)
        return rows[0][0]

    def previous(self, notification: Notification) -> dict | None:
        """The latest notification already recorded about the same subject (one VM, one
        process or one host): its id, the notification and its deliveries' driver and
        state, what a routing decision (actions.route, on the write path) compares with."""
        rows = self._read("SELECT id, type, hostname, generated_time, payload FROM "
                          "notifications WHERE order_key = ? ORDER BY id DESC LIMIT 1",
                          (notification.order_key(),))
        if not rows:
            return None
        deliveries = [{"driver": d["driver"], "state": d["state"]} for d in self._read(
            "SELECT driver, state FROM deliveries WHERE notification_id = ? ORDER BY id",
            (rows[0]["id"],))]
        return {"id": rows[0]["id"], "notification": _notification(rows[0]).to_dict(),
                "deliveries": deliveries}

    def recent(self, notification: Notification, since: str) -> list[sqlite3.Row]:
        """The subject's notifications generated at or after ``since`` (an ISO text as
        stored), newest first, with the state of their Masakari delivery (``masakari``;
        None when not for Masakari): what monitors.recipient.distinct looks at."""
        return self._read(
            "SELECT n.id, n.type, n.payload, n.generated_time, (SELECT d.state FROM "
            "deliveries d WHERE d.notification_id = n.id AND d.driver = 'masakari') AS "
            "masakari FROM notifications n WHERE n.order_key = ? AND n.generated_time >= ? "
            "ORDER BY n.id DESC LIMIT 100", (notification.order_key(), since))

    def query(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """Rows of one SELECT over these tables, for the read model (monitors/history.py:
        history, status, metrics, the CLI). The outbox stores; what operators see of it
        is shaped there."""
        if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
            raise ValueError("Outbox.query reads; writes go through put/claim/finish")
        return self._read(sql, args)

    # -- following the recovery (policy: monitors/follow.py) ---------------------------------
    _ANSWERED = ("FROM deliveries d WHERE d.state = 'delivered' AND d.remote_id IS NOT NULL "
                 "AND d.updated_at >= ? AND d.driver IN ({}) AND NOT EXISTS (SELECT 1 FROM "
                 "recoveries r WHERE r.delivery_id = d.id)")

    def next_follow_up(self, drivers: Iterable[str], since: float,
                       first: float) -> float | None:
        """When the next follow-up is due (wall clock; None: nothing to follow): a
        delivery answered with a remote id since ``since`` and not followed yet is due
        ``first`` seconds after its answer."""
        drivers = list(drivers)
        if not drivers:
            return None
        marks = ",".join("?" * len(drivers))
        now = time.time()
        for (owner,) in self._read("SELECT DISTINCT lease_owner FROM recoveries WHERE ended IS"
                                   f" NULL AND lease_until > ? AND driver IN ({marks})",
                                   [now, *drivers]):
            if not self._alive(owner):
                return now  # left by a process that died: due now, its lease is void
        rows = self._read(
            "SELECT MIN(due) FROM (SELECT MAX(next_at, COALESCE(lease_until, 0)) AS due FROM "
            f"recoveries WHERE ended IS NULL AND driver IN ({marks}) UNION ALL "
            f"SELECT MIN(d.updated_at) + ? {self._ANSWERED.format(marks)})",
            [*drivers, first, since, *drivers])
        return rows[0][0]

    def claim_follow_up(self, drivers: Iterable[str], since: float, first: float,
                        lease: float) -> FollowUp | None:
        """Reserve the most overdue follow-up for this process (a lease, as claim());
        deliveries answered with a remote id since ``since`` get their follow-up row
        first, due ``first`` seconds after the answer."""
        drivers = list(drivers)
        if not drivers:
            return None
        marks = ",".join("?" * len(drivers))
        now = time.time()
        with self._write(durable=False) as db:
            db.execute("INSERT OR IGNORE INTO recoveries (delivery_id, notification_id, "
                       "driver, remote_id, delivered_at, next_at, updated_at) SELECT d.id, "
                       "d.notification_id, d.driver, d.remote_id, d.updated_at, "
                       f"d.updated_at + ?, ? {self._ANSWERED.format(marks)}",
                       (first, now, since, *drivers))
            for (owner,) in db.execute("SELECT DISTINCT lease_owner FROM recoveries WHERE "
                                       "ended IS NULL AND lease_until > ?", (now,)).fetchall():
                if not self._alive(owner):
                    db.execute("UPDATE recoveries SET lease_owner = NULL, lease_until = NULL "
                               "WHERE ended IS NULL AND lease_owner = ?", (owner,))
            row = db.execute(
                f"SELECT * FROM recoveries WHERE ended IS NULL AND driver IN ({marks}) AND "
                "next_at <= ? AND (lease_until IS NULL OR lease_until <= ?) "
                "ORDER BY next_at LIMIT 1", (*drivers, now, now)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE recoveries SET lease_owner = ?, lease_until = ? "
                       "WHERE delivery_id = ?", (self.owner, now + lease, row["delivery_id"]))
        return FollowUp(row["delivery_id"], row["notification_id"], row["driver"],
                        row["remote_id"], row["delivered_at"], row["status"], row["polls"],
                        row["last_error"])

    def record_follow_up(self, follow_up: FollowUp, *, status: str | None, error: str | None,
                         next_at: float, ended: str | None, detail: dict | None) -> None:
        """Store one poll's result: the status seen (None: unreadable, ``error`` says why,
        the last status seen is kept), when to ask next, whether following ended
        ('final' or 'bound'); ``detail``, when given, goes into the notification's
        history as a ``recovery`` row."""
        now = time.time()
        with self._write(durable=ended is not None) as db:
            db.execute("UPDATE recoveries SET status = COALESCE(?, status), polls = polls + 1,"
                       " next_at = ?, ended = ?, last_error = ?, lease_owner = NULL,"
                       " lease_until = NULL, updated_at = ? WHERE delivery_id = ?",
                       (status, next_at, ended, error, now, follow_up.delivery_id))
            if detail is not None:
                self._history(db, follow_up.notification_id, "recovery", detail,
                              delivery_id=follow_up.delivery_id, at=now)


def _corrupt(exc: BaseException) -> bool:
    """SQLITE_NOTADB / SQLITE_CORRUPT (the file's fault), not a storage error such as
    full, read-only, locked or I/O (OperationalError: the file itself is fine)."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(
        exc, sqlite3.OperationalError)


@contextlib.contextmanager
def _keep_names(path: str):
    """SQLite deletes ``<db>-wal`` and ``<db>-shm`` *by name* when the last connection of a
    database closes. Closing our connection to a deleted/replaced file would so unlink the
    live WAL of whatever file now has that name (other daemons write it): keep those names
    with a hard link and put them back afterwards."""
    kept = []
    for suffix in ("-wal", "-shm"):
        keep = f"{path}{suffix}.keep-{os.getpid()}"
        try:
            os.link(path + suffix, keep)
            kept.append((keep, path + suffix))
        except OSError:
            pass
    try:
        yield
    finally:
        for keep, name in kept:
            try:
                os.rename(keep, name)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(keep)


def _salvage(db: sqlite3.Connection, origin: str) -> list[dict]:
    """The pending notifications of a database, with their drivers still to deliver, read
    row by row so one unreadable row does not cost the others."""
    out = []
    try:
        ids = [r[0] for r in db.execute(
            "SELECT id FROM notifications WHERE state = 'pending' ORDER BY id")]
    except sqlite3.DatabaseError:
        ids = []
        with contextlib.suppress(sqlite3.DatabaseError):
            top = db.execute("SELECT MAX(id) FROM notifications").fetchone()[0] or 0
            ids = range(1, top + 1)
    for nid in ids:
        try:
            row = db.execute("SELECT * FROM notifications WHERE id = ?", (nid,)).fetchone()
            if row is None or row["state"] != State.PENDING:
                continue
            drivers = [r[0] for r in db.execute(
                "SELECT driver FROM deliveries WHERE notification_id = ? AND state = 'pending'",
                (nid,))]
            out.append({"id": nid, "type": row["type"], "hostname": row["hostname"],
                        "generated_time": row["generated_time"], "payload": row["payload"],
                        "source": row["source"], "decision": json.loads(row["decision"]),
                        "drivers": drivers or ["masakari"], "from": f"{origin} #{nid}"})
        except (sqlite3.DatabaseError, ValueError, IndexError):
            continue
    return out


def _salvage_file(path: str) -> list[dict]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return []
    db.row_factory = sqlite3.Row
    try:
        return _salvage(db, path)
    finally:
        db.close()


def _notification(row: sqlite3.Row) -> Notification:
    return Notification(row["type"], row["hostname"], row["generated_time"],
                        json.loads(row["payload"]))
