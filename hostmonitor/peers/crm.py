"""Pacemaker's CLI tools, run with a timeout and parsed: cluster view and fencing history.

Only the XML output (``--output-as=xml``) is parsed: it is the stable, versioned interface
(pacemaker's api/*.rng). No command ever receives a secret.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import shlex
import xml.etree.ElementTree as ET

from monitors import command
from monitors.command import CommandError  # noqa: F401 - callers catch crm.CommandError

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Node:
    name: str
    online: bool
    type: str  # member | remote | ping
    unclean: bool = False


@dataclasses.dataclass(frozen=True)
class ClusterView:
    quorum: bool
    dc: str | None
    nodes: dict[str, Node]


@dataclasses.dataclass(frozen=True)
class FenceEvent:
    target: str
    action: str
    status: str  # success | failed | pending
    completed: dt.datetime | None


def run(argv: list[str], timeout: float) -> command.Result:
    """Run a Pacemaker tool through the shared runner (no shell, no stdin, bounded); raise
    CommandError when it cannot run or does not answer in time. A non-zero exit is the
    caller's to judge (crm_mon says more in its XML than in its exit code)."""
    result = command.run(argv, timeout)
    if result.returncode is None:
        raise CommandError(f"{argv[0]}: {result.detail}")
    return result


def run_xml(argv: list[str], timeout: float) -> ET.Element:
    """Run a Pacemaker tool and return its <pacemaker-result> root; raise CommandError."""
    proc = run(argv, timeout)
    try:
        root = ET.fromstring(proc.stdout)
    except ET.ParseError as exc:
        raise CommandError(f"{argv[0]}: exit {proc.returncode}, output is not XML ({exc}): "
                           f"{(proc.stderr or proc.stdout).strip()[:200]}") from None
    status = root.find("status")
    errors = "; ".join(e.text or "" for e in root.iter("error"))
    # crm_mon 2.1.5 that cannot reach the CIB exits 0 with <status code="0"> and an <error>:
    # without this check it read as "no quorum"
    if proc.returncode != 0 or errors or (status is not None
                                          and status.get("code") not in (None, "0")):
        message = status.get("message") if status is not None else ""
        raise CommandError(f"{argv[0]}: exit {proc.returncode}: {message} {errors}".strip())
    return root


def parse_crm_mon(root: ET.Element) -> ClusterView:
    """crm_mon --output-as=xml (api crm_mon-2.x): quorum, DC and node states."""
    dc_el = root.find("summary/current_dc")
    quorum = dc_el is not None and dc_el.get("present") == "true" \
        and dc_el.get("with_quorum") == "true"
    dc = dc_el.get("name") if dc_el is not None and dc_el.get("present") == "true" else None
    nodes = {}
    for el in root.findall("nodes/node"):
        name = el.get("name")
        if not name:
            continue
        nodes[name] = Node(name=name, online=el.get("online") == "true",
                           type=el.get("type", "member"), unclean=el.get("unclean") == "true")
    return ClusterView(quorum=quorum, dc=dc, nodes=nodes)


def cluster_view(crm_mon: str, timeout: float) -> ClusterView:
    """``crm_mon --output-as=xml -1`` parsed: quorum, DC, nodes; a remote node is online
    only when the CIB also has it connected (``confirm_remotes``)."""
    view = parse_crm_mon(run_xml([crm_mon, "--output-as=xml", "-1"], timeout))
    if any(n.type == "remote" and n.online for n in view.nodes.values()):
        view = confirm_remotes(view, remote_states(crm_mon, timeout))
    return view


def _tool(crm_mon: str, name: str) -> str:
    """A Pacemaker tool beside the configured crm_mon (same directory when it is a path)."""
    head, _, tail = crm_mon.rpartition("/")
    return f"{head}/{name}" if head and tail == "crm_mon" else name


def _failed(argv: list[str], proc: command.Result) -> CommandError:
    """A tool's failure, named with its exit code and what it printed."""
    return CommandError(f"{argv[0]}: exit {proc.returncode}: "
                        f"{(proc.stderr or proc.stdout).strip()[:200]}")


def remote_states(crm_mon: str, timeout: float) -> dict[str, str]:
    """Remote node name → its node_state@in_ccm in the CIB's status section (one
    ``cibadmin --query --xpath``; works on a remote node too, through its proxy)."""
    argv = [_tool(crm_mon, "cibadmin"), "--query", "--no-children", "--xpath",
            "//status/node_state[@remote_node='true']"]
    proc = run(argv, timeout)
    if proc.returncode == 105:  # ENXIO: no remote node has a node_state yet
        return {}
    if proc.returncode != 0:
        raise _failed(argv, proc)
    try:
        root = ET.fromstring(f"<states>{proc.stdout}</states>")
    except ET.ParseError as exc:
        raise CommandError(f"{argv[0]}: output is not XML ({exc})") from None
    return {el.get("uname") or el.get("id") or "": el.get("in_ccm", "")
            for el in root.iter("node_state")}


def _connected(in_ccm: str) -> bool:
    """in_ccm of a remote node: "true" (2.1.5) or, in later versions, the epoch seconds
    of the connection; "false"/"0"/missing: not connected."""
    value = (in_ccm or "").strip().lower()
    return value == "true" or (value.isdigit() and int(value) > 0)


def confirm_remotes(view: ClusterView, states: dict[str, str]) -> ClusterView:
    """crm_mon 2.1.5 shows a remote node online while its connection resource's start is
    *pending* — with pacemaker-remoted dead, after the node was fenced, for each reconnect
    attempt (up to the start timeout, 20 s by default). Seen on the live cluster: without
    this a killed remote node was reported STOPPED, then STARTED 3 s later, dead. The
    controller marks the node connected (node_state in_ccm) only once the connection is
    really up: a remote node is online when both say so."""
    nodes = {name: (dataclasses.replace(n, online=False)
                    if n.type == "remote" and n.online and not _connected(states.get(name, ""))
                    else n)
             for name, n in view.nodes.items()}
    return dataclasses.replace(view, nodes=nodes)


def parse_time(text: str | None) -> dt.datetime | None:
    """fence_event@completed: '2026-11-25 20:34:06Z' (what 2.1.5 prints, UTC), with an
    offset ('... +00:00'), ISO 8601, or ctime."""
    if not text:
        return None
    for fmt in ("%Y-%m-%d %H:%M:%SZ", "%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S.%f %z",
                "%a %b %d %H:%M:%S %Y"):
        try:
            value = dt.datetime.strptime(text.strip(), fmt)
            if fmt.endswith("Z"):
                value = value.replace(tzinfo=dt.timezone.utc)
            break
        except ValueError:
            continue
    else:
        try:
            value = dt.datetime.fromisoformat(text.strip())
        except ValueError:
            return None
    return value if value.tzinfo else value.astimezone()


def parse_fence_history(root: ET.Element) -> list[FenceEvent]:
    """stonith_admin --history NODE --verbose --output-as=xml (pacemaker 2.1.5):
    <list name="fencing history"><fence_event target= action= status= completed=/>...;
    newest first, failed and pending events included (pending ones have no completed)."""
    return [FenceEvent(target=el.get("target", ""), action=el.get("action", ""),
                       status=el.get("status", ""), completed=parse_time(el.get("completed")))
            for el in root.iter("fence_event")]


def fence_history(stonith_admin: str, node: str, timeout: float) -> list[FenceEvent]:
    """The fencer's whole history of ``node``; ``stonith_admin`` is the configured command,
    split into arguments like the fence request's (hostmonitor/fencing.py), no shell. ``--verbose`` is required: without it 2.1.5
    prints at most ONE event, the oldest success, so a host fenced before would never show
    its new fencing (seen on a live cluster: every second failure went out UNKNOWN)."""
    return parse_fence_history(run_xml([*shlex.split(stonith_admin), "--history", node,
                                        "--verbose", "--output-as=xml"], timeout))


def fenced_since(events: list[FenceEvent], node: str, since: dt.datetime) -> FenceEvent | None:
    """The successful power-off/reboot of ``node`` completed at or after ``since``
    (with a little slack for clock granularity)."""
    slack = dt.timedelta(seconds=5)
    for ev in events:  # any order: the newest success qualifies as well as an older one
        if ev.target == node and ev.status == "success" \
                and ev.action in ("off", "reboot", "poweroff") \
                and ev.completed is not None and ev.completed >= since - slack:
            return ev
    return None


# -- the reporter's record in the CIB ----------------------------------------------------------
# One report per failure: the DC reports, every other node stands by. The report made is
# recorded as a permanent node attribute of the failed node (configuration/nodes, replicated
# by the CIB to every node and kept across the node's return), so a standby can tell after
# its grace period whether the reporter did its job.
REPORT_ATTRIBUTE = "compute-ha-monitors-report"


@dataclasses.dataclass(frozen=True)
class Report:
    event: str  # STOPPED | STARTED
    host_status: str  # NORMAL | UNKNOWN
    at: float  # epoch seconds of the reporter's decision
    by: str

    def value(self) -> str:
        return f"{self.event}:{self.host_status}:{self.at:.3f}:{self.by}"

    @classmethod
    def parse(cls, value: str | None) -> "Report | None":
        try:
            event, status, at, by = (value or "").split(":", 3)
            return cls(event, status, float(at), by)
        except ValueError:
            return None


def read_report(crm_mon: str, node: str, timeout: float) -> Report | None:
    """The last report recorded for ``node``; None when there is none. CommandError when the
    CIB cannot be read."""
    argv = [_tool(crm_mon, "crm_attribute"), "--type", "nodes", "--node", node, "--name",
            REPORT_ATTRIBUTE, "--query", "--output-as=xml"]
    proc = run(argv, timeout)
    if proc.returncode == 105:  # ENXIO: no such attribute
        return None
    try:
        root = ET.fromstring(proc.stdout)
    except ET.ParseError:
        raise _failed(argv, proc) from None
    el = root.find("attribute")
    if proc.returncode != 0 or el is None:
        status = root.find("status")
        raise CommandError(f"{argv[0]}: exit {proc.returncode}: "
                           f"{status.get('message') if status is not None else ''}")
    return Report.parse(el.get("value"))


def write_report(crm_mon: str, node: str, report: Report, timeout: float) -> None:
    argv = [_tool(crm_mon, "crm_attribute"), "--type", "nodes", "--node", node, "--name",
            REPORT_ATTRIBUTE, "--update", report.value()]
    proc = run(argv, timeout)
    if proc.returncode != 0:
        raise _failed(argv, proc)
