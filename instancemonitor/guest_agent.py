"""Optional guest-agent heartbeat (masakari-monitors' introspective monitor, in-process).

Every ``guest_monitoring_interval`` seconds the agents of all running domains whose
guest-agent channel path matches ``qemu_guest_agent_sock_path`` (re.match, as
masakari-monitors does) are pinged at once (a small thread pool, not one VM after another)
with ``guest-ping`` through libvirt (``virDomainQemuAgentCommand``, which needs a
read-write connection of its own). After ``guest_monitoring_failure_threshold``
consecutive failures the domain gets one VM ``QEMU_GUEST_AGENT_ERROR / STOPPED_FAILED``;
the next successful ping re-arms it. Not a restart: a guest the engine restarted whose
agent stays silent is not reported again (no restart loop for an image that declares an
agent it does not run).
"""
from __future__ import annotations

import concurrent.futures
import logging
import re
import time
import xml.etree.ElementTree as ET

from monitors.notification import VM, Notification

from instancemonitor import libvirt_auth

LOG = logging.getLogger(__name__)
AGENT_CHANNEL = "org.qemu.guest_agent.0"


class Heartbeat:
    """Per-domain failure counting: pure, so its rules are tested without a guest."""

    def __init__(self, threshold: int):
        self.threshold = threshold
        self.failures: dict[str, int] = {}
        self.sent: set[str] = set()

    def record(self, uuid: str, ok: bool) -> bool:
        """True when a notification must be sent now."""
        if ok:
            if uuid in self.sent:
                LOG.info("guest agent of %s answers again: re-armed", uuid)
            self.failures.pop(uuid, None)
            self.sent.discard(uuid)
            return False
        count = self.failures[uuid] = self.failures.get(uuid, 0) + 1
        if count >= self.threshold and uuid not in self.sent:
            self.sent.add(uuid)
            return True
        return False

    def forget_except(self, running: set[str], defined: set[str]) -> None:
        """Failures count only while a domain runs; "sent" stays while it is defined, so a
        guest restarted for its silent agent (the engine's stop/start) that stays silent
        is not reported again at every restart — only an answer re-arms it."""
        for uuid in set(self.failures) - running:
            self.failures.pop(uuid, None)
        self.sent &= defined


def agent_socket(xml: str) -> str | None:
    """Path of the domain's guest-agent channel, or None without one."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for ch in root.findall("./devices/channel"):
        target = ch.find("target")
        if target is not None and target.get("name") == AGENT_CHANNEL:
            source = ch.find("source")
            return (source.get("path") if source is not None else None) or ""
    return None


class GuestAgentMonitor:
    def __init__(self, conf, source):
        self.source = source
        group = conf.introspectiveinstancemonitor
        self.interval = group.guest_monitoring_interval
        self.timeout = group.guest_monitoring_timeout
        self.path_re = re.compile(group.qemu_guest_agent_sock_path)
        self.beat = Heartbeat(group.guest_monitoring_failure_threshold)
        self.keepalive = (conf.instancemonitor.keepalive_interval,
                          conf.instancemonitor.keepalive_count)
        self._conn = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=16,
                                                           thread_name_prefix="agent-ping")

    def start(self):
        """The heartbeat loop runs as a thread of the source (stopped and watched with it)."""
        self.source.spawn(self._run, "guest-agent")

    def stop(self):
        """The source's stop event ends the loop; pings not started yet are dropped."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _connection(self):
        import libvirt
        if self._conn is not None and self._conn.isAlive():
            return self._conn
        # agent commands need read-write; auth.conf credentials work (libvirt_auth.py)
        conn = libvirt_auth.open_connection(self.source.uri, read_only=False)
        try:
            # as the source's connection: a libvirtd that stops answering closes it (then
            # isAlive() is False and the next round reconnects) instead of hanging a round
            conn.setKeepAlive(self.keepalive[0], self.keepalive[1])
        except libvirt.libvirtError as exc:  # e.g. test:/// has no keepalive
            LOG.debug("keepalive not available on %s: %s", self.source.uri, exc)
        self._conn = conn
        return self._conn

    def _ping(self, dom) -> bool:
        import libvirt
        import libvirt_qemu
        try:
            libvirt_qemu.qemuAgentCommand(dom, '{"execute": "guest-ping"}', self.timeout, 0)
            return True
        except libvirt.libvirtError as exc:
            LOG.debug("guest-ping of %s failed: %s", dom.name(), exc)
            return False

    def _run(self):
        import libvirt
        while not self.source.sleep(self.interval):
            try:
                conn = self._connection()
                # two list calls a round, not one isActive() round trip per domain
                defined = {d.UUIDString() for d in conn.listAllDomains(0)}
                doms = []
                for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                    path = agent_socket(dom.XMLDesc(0))
                    if path is not None and self.path_re.match(path):
                        doms.append(dom)
                futures = {self._pool.submit(self._ping, d): d for d in doms}
                seen = set()
                for fut in concurrent.futures.as_completed(futures, timeout=self.timeout + 5):
                    dom = futures[fut]
                    uuid = dom.UUIDString()
                    seen.add(uuid)
                    if self.beat.record(uuid, fut.result()):
                        self._notify(uuid, dom.name())
                self.beat.forget_except(seen, defined)
            except Exception as exc:  # noqa: BLE001 - heartbeat trouble never stops the daemon
                LOG.warning("guest-agent heartbeat round failed: %s", exc)
                self._conn = None

    def _notify(self, uuid: str, name: str):
        if self.source.rules.ignored(uuid, name):
            return
        n = Notification.create(VM, self.source.hostname, {
            "event": "QEMU_GUEST_AGENT_ERROR", "instance_uuid": uuid,
            "vir_domain_event": "STOPPED_FAILED"}, generated_time=None)
        self.source.emit(n, decision={"guest_agent": {
            "failed_pings": self.beat.failures.get(uuid), "at": time.time()}})
