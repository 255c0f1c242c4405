"""Link state of the configured interfaces, pushed by netlink (no polling).

One reader thread owns a pyroute2 ``IPRoute`` (it must be created and bound in the thread
that reads it), loads the initial table with ``get_links`` and then applies every
RTM_NEWLINK / RTM_DELLINK. An interface is up when IFF_UP and IFF_RUNNING are set, the
carrier is on and the operstate is not DOWN/LOWERLAYERDOWN/NOTPRESENT. A configured
interface that has members (bond slaves or bridge ports: links whose IFLA_MASTER is it)
is up when it and all its members are up, degraded when some members are down, down when
it is down or all members are. A role with several interfaces is combined the same way.
"""
from __future__ import annotations

import dataclasses
import logging
import errno
import select
import socket
import threading
import time
from typing import Callable

LOG = logging.getLogger(__name__)

UP, DEGRADED, DOWN = "up", "degraded", "down"
ROLES = ("management", "tenant", "storage")
IFF_UP, IFF_RUNNING = 0x1, 0x40
RTMGRP_LINK = 0x1
_DOWN_OPERSTATES = {"DOWN", "LOWERLAYERDOWN", "NOTPRESENT"}


@dataclasses.dataclass(frozen=True)
class Link:
    index: int
    name: str
    flags: int
    operstate: str
    carrier: int | None
    master: int | None

    @property
    def up(self) -> bool:
        return (bool(self.flags & IFF_UP) and bool(self.flags & IFF_RUNNING)
                and self.carrier != 0 and self.operstate not in _DOWN_OPERSTATES)

    @classmethod
    def from_msg(cls, msg) -> "Link":
        return cls(index=msg["index"], name=msg.get_attr("IFLA_IFNAME"), flags=msg["flags"],
                   operstate=msg.get_attr("IFLA_OPERSTATE") or "UNKNOWN",
                   carrier=msg.get_attr("IFLA_CARRIER"), master=msg.get_attr("IFLA_MASTER"))


def combine(states: list[str]) -> str:
    """Several parts of one thing: down only when all are down, degraded when some are."""
    if not states or all(s == UP for s in states):
        return UP
    if all(s == DOWN for s in states):
        return DOWN
    return DEGRADED


def roles_of(conf) -> dict[str, list[str]]:
    hm = conf.hostmonitor
    return {"management": list(hm.management_interfaces), "tenant": list(hm.tenant_interfaces),
            "storage": list(hm.storage_interfaces)}


def existing_names() -> set[str]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return {m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}


def missing_interfaces(conf) -> list[str]:
    """Configured interfaces that do not exist (in this network namespace)."""
    wanted = [(role, name) for role, names in roles_of(conf).items() for name in names]
    if not wanted:
        return []
    present = existing_names()
    return [f"[hostmonitor] {role}_interfaces: interface {name!r} does not exist"
            for role, name in wanted if name not in present]


class LinkTable:
    """Current links by index; answers role states. Not thread-safe by itself."""

    def __init__(self):
        self.links: dict[int, Link] = {}

    def apply(self, msg) -> bool:
        """Apply one netlink message; True when a link changed."""
        event = msg.get("event")
        if event not in ("RTM_NEWLINK", "RTM_DELLINK"):
            return False  # addresses, routes ...: not ours
        index = msg.get("index")
        if event == "RTM_DELLINK":
            return self.links.pop(index, None) is not None
        if event != "RTM_NEWLINK":
            return False
        link = Link.from_msg(msg)
        if link.name is None:
            return False
        old = self.links.get(index)
        self.links[index] = link
        return old != link

    def by_name(self, name: str) -> Link | None:
        return next((l for l in self.links.values() if l.name == name), None)

    def interface_state(self, name: str) -> str:
        link = self.by_name(name)
        if link is None or not link.up:  # vanished at run time = down
            return DOWN
        members = [l for l in self.links.values() if l.master == link.index]
        if not members:
            return UP
        return combine([UP if m.up else DOWN for m in members])

    def detail(self, name: str) -> str:
        link = self.by_name(name)
        if link is None:
            return f"{name}: missing"
        members = [l for l in self.links.values() if l.master == link.index]
        text = (f"{name}: {'up' if link.up else 'down'} (operstate {link.operstate}, "
                f"carrier {link.carrier}, flags {link.flags:#x})")
        if members:
            text += " members " + ",".join(f"{m.name}={'up' if m.up else 'down'}"
                                          for m in members)
        return text


class LinkWatcher:
    """Keeps a LinkTable from netlink and calls ``on_change()`` after each change. Its
    reader is a thread of the source that owns it (``start(owner)``): it ends when the
    owner stops."""

    def __init__(self, on_change: Callable[[], None]):
        self.on_change = on_change
        self.table = LinkTable()
        self.lock = threading.Lock()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._owner = None
        self._thread: threading.Thread | None = None
        self.last_message: float | None = None

    def start(self, owner, timeout: float = 10.0) -> None:
        """Run the reader as a thread of ``owner`` (a monitors.source.Source); return once
        the initial link table is loaded."""
        self._owner = owner
        self._thread = owner.spawn(self._run, "netlink")
        if not self._ready.wait(timeout):
            raise RuntimeError("netlink: no initial link table")
        if self._error:
            raise RuntimeError(f"netlink: {self._error}")

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def role_state(self, names: list[str]) -> str:
        with self.lock:
            return combine([self.table.interface_state(n) for n in names])

    def details(self, names: list[str]) -> list[str]:
        with self.lock:
            return [self.table.detail(n) for n in names]

    def _dump(self) -> None:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:  # made in this thread: an IPRoute belongs to its thread
            initial = ipr.get_links()
        with self.lock:
            self.table = LinkTable()
            for msg in initial:
                self.table.apply(msg)

    def _run(self) -> None:
        # Events come from a plain netlink socket subscribed to RTMGRP_LINK (parsed by
        # pyroute2's marshal): select() on it is exact, which pyroute2 0.9's buffered
        # IPRoute.get() is not. Subscribed before the dump, so no change falls between.
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl

        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((0, RTMGRP_LINK))
            self._dump()
        except BaseException as exc:  # noqa: BLE001
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        marshal = MarshalRtnl()
        try:
            while not self._owner.stopping:
                readable, _, _ = select.select([sock], [], [], 0.5)
                if not readable:
                    continue
                try:
                    data = sock.recv(1 << 16)
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    LOG.warning("netlink: events lost (ENOBUFS): reading the table again")
                    self._dump()
                    self.on_change()
                    continue
                changed = False
                for msg in marshal.parse(data):
                    try:
                        with self.lock:
                            changed = self.table.apply(msg) or changed
                    except Exception:  # noqa: BLE001 - one odd message never stops us
                        LOG.exception("netlink: cannot apply %s", msg.get("event"))
                self.last_message = time.monotonic()
                if changed:
                    self.on_change()
        except Exception:  # noqa: BLE001 - health() reports the dead reader
            LOG.exception("netlink reader stopped")
        finally:
            sock.close()
