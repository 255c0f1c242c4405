"""Pacemaker's CLI tools, run with a timeout and parsed: cluster view and fencing history.

Only the XML output (``--output-as=xml``) is parsed: it is the stable, versioned interface
(pacemaker's api/*.rng). No command ever receives a secret.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import subprocess
import xml.etree.ElementTree as ET

LOG = logging.getLogger(__name__)


class CommandError(RuntimeError):
    """A Pacemaker command failed, timed out, or printed something we cannot read."""


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


def run_xml(argv: list[str], timeout: float) -> ET.Element:
    """Run a Pacemaker tool and return its <pacemaker-result> root; raise CommandError."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CommandError(f"{argv[0]}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise CommandError(f"{argv[0]}: cannot run: {exc}") from None
    try:
        root = ET.fromstring(proc.stdout)
    except ET.ParseError as exc:
        raise CommandError(f"{argv[0]}: exit {proc.returncode}, output is not XML ({exc}): "
                           f"{(proc.stderr or proc.stdout).strip()[:200]}") from None
    status = root.find("status")
    if proc.returncode != 0 or (status is not None and status.get("code") not in (None, "0")):
        errors = "; ".join(e.text or "" for e in root.iter("error"))
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
    return parse_crm_mon(run_xml([crm_mon, "--output-as=xml", "-1"], timeout))


def parse_time(text: str | None) -> dt.datetime | None:
    """fence_event@completed: '2026-11-24 05:41:45 +00:00' (2.1.x), ISO 8601, or ctime."""
    if not text:
        return None
    for fmt in ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S.%f %z", "%a %b %d %H:%M:%S %Y"):
        try:
            value = dt.datetime.strptime(text.strip(), fmt)
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
    """stonith_admin --history NODE --output-as=xml (api stonith_admin-2.x, fence-event-2.15):
    <list name="event"><fence_event target= action= status= completed=/></list>."""
    return [FenceEvent(target=el.get("target", ""), action=el.get("action", ""),
                       status=el.get("status", ""), completed=parse_time(el.get("completed")))
            for el in root.iter("fence_event")]


def fence_history(stonith_admin: str, node: str, timeout: float) -> list[FenceEvent]:
    return parse_fence_history(run_xml([stonith_admin, "--history", node, "--output-as=xml"],
                                       timeout))


def fenced_since(events: list[FenceEvent], node: str, since: dt.datetime) -> FenceEvent | None:
    """The successful power-off/reboot of ``node`` completed at or after ``since``
    (with a little slack for clock granularity)."""
    slack = dt.timedelta(seconds=5)
    for ev in events:
        if ev.target == node and ev.status == "success" \
                and ev.action in ("off", "reboot", "poweroff") \
                and ev.completed is not None and ev.completed >= since - slack:
            return ev
    return None
