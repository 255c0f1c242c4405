"""One report per peer failure: one node reports, every other node stands by.

Pacemaker: every surviving node sees a peer fail at the same moment (crm_mon, node and
fencing alerts), and Masakari's duplicate check is not atomic (two equal POSTs 3 ms apart were both stored),
so "everybody reports, the API drops the duplicates" sends one failure several times. The
Designated Controller (crm_mon's ``current_dc``; Pacemaker elects exactly one per quorate
partition) is the reporter. It records what it reported in the CIB (``crm.write_report``).
Any other node is a standby: it makes the same decision, waits ``reporter_grace`` seconds,
and reports only when the record does not cover this failure by then (the DC died, or
could not write). A new DC elected after the old one failed is simply the reporter.

etcd: the reporter holds the election key ``P/reporter``, created if absent and bound to its
lease (``claim``), so one holder at a time and a dead holder's key expires with its lease;
before each comparison it checks it still holds it (``holds``, a linearizable read).
"""
from __future__ import annotations

import logging

from hostmonitor.peers import crm

LOG = logging.getLogger(__name__)

RANK = {"UNKNOWN": 0, "NORMAL": 1}
CLOCK_SLACK = 2.0  # seconds: reporters on different nodes read different clocks


def covers(recorded: crm.Report | None, event: str, host_status: str, since: float) -> bool:
    """True when ``recorded`` already says ``event`` (with the same or a better host_status:
    a recorded NORMAL covers an UNKNOWN, never the reverse) about the failure that began at
    ``since`` (epoch seconds). A STARTED recorded since then covers a STOPPED: the reporter
    sends STARTED only about a node it knows was reported down, so that failure was
    reported and is over; a STOPPED after it would recover a host that is back (no clock
    slack there: a STARTED just before a new failure must not cover it)."""
    if recorded is None or recorded.at < since - CLOCK_SLACK:
        return False
    if recorded.event == "STARTED" and event == "STOPPED":
        return recorded.at >= since
    if recorded.event != event:
        return False
    return RANK.get(recorded.host_status, 0) >= RANK.get(host_status, 0)


def recorded(crm_mon: str, node: str, timeout: float) -> crm.Report | None:
    """The CIB's record, or None when it cannot be read (then the caller reports: a lost
    report is worse than a duplicate, which Masakari may still answer with 409)."""
    try:
        return crm.read_report(crm_mon, node, timeout)
    except crm.CommandError as exc:
        LOG.warning("cannot read the report record of %s: %s", node, exc)
        return None


def record(crm_mon: str, node: str, report: crm.Report, timeout: float) -> None:
    try:
        crm.write_report(crm_mon, node, report, timeout)
    except crm.CommandError as exc:
        LOG.warning("cannot record the report of %s in the CIB (standbys may repeat it): %s",
                    node, exc)


def claim(client, key: str, mine: str, lease, held: bool) -> tuple[bool, str | None]:
    """etcd: take ``key`` (create-if-absent, bound to ``lease``, value ``mine`` =
    ``host:lease id``) or check who has it. The value names the lease, so a transient error
    never makes a holder forget that it holds the key. Returns (we hold it, holder)."""
    if not held and client.create(key, mine, lease):
        return True, mine
    holder = client.get(key)
    value = holder[0].decode() if holder else None
    return value == mine, value


def holds(client, key: str, mine: str) -> bool:
    """etcd: whether ``mine`` still holds ``key`` (a linearizable read: raises without
    quorum, and then nobody is reported)."""
    holder = client.get(key)
    return bool(holder) and holder[0].decode() == mine
