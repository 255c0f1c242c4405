"""The libvirt source (entry point ``libvirt``): ties the connection (libvirt_connection.py:
event loop, reconnect, callbacks) to the decisions (domain_events.py: filter, rules,
notification, last known states) and the reconcile after every (re)connect
(reconcile.py). Its threads: the connector, the domain-state flusher, and libvirt's event
loop (one per process); the guest-agent heartbeat when enabled.
"""
from __future__ import annotations

import logging

from monitors.source import Health, Source

from instancemonitor import domain_events, libvirt_connection, reconcile
from instancemonitor.domain_states import DomainStates

LOG = logging.getLogger(__name__)


class LibvirtSource(Source):
    name = "libvirt"

    CONNECT_WAIT = libvirt_connection.LibvirtConnection.CONNECT_WAIT

    def __init__(self, conf, emit):
        super().__init__(conf, emit)
        self.hostname = conf.hostname
        self.states = DomainStates(conf.state_path)
        self.events = domain_events.DomainEvents(conf, emit, self.states)
        self.connection = libvirt_connection.LibvirtConnection(
            conf, self._stop, event_ids=lambda: self.events.filter.event_ids(),
            on_event=self.events.on_event,
            on_connected=lambda conn, unobserved: reconcile.reconcile(conn, self.events,
                                                                      unobserved))
        self.uri = self.connection.uri
        self.guest_agent = None

    @property
    def rules(self):
        return self.events.rules  # the guest-agent heartbeat asks them too

    # -- Source interface -------------------------------------------------------------------
    def start(self) -> None:
        self.states.load()
        libvirt_connection.start_event_loop()
        # Connect in the connector thread: openReadOnly has no timeout, and a hung libvirtd
        # (accepting on its socket, never answering) must not keep the daemon from READY.
        # Wait a bounded moment so READY's STATUS already says whether libvirtd is there.
        self.spawn(self.connection.run, "libvirt-connector")
        self.spawn(self._flusher, "domain-state-flush")
        if not self.connection.first_attempt.wait(self.CONNECT_WAIT):
            self.connection.status = (f"libvirt {self.uri}: no answer to the connection "
                                      f"after {self.CONNECT_WAIT:g}s (libvirtd hung?); "
                                      "still trying")
        if self.conf.instancemonitor.guest_agent_heartbeat:
            from instancemonitor.guest_agent import GuestAgentMonitor
            self.guest_agent = GuestAgentMonitor(self.conf, self)
            self.guest_agent.start()

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        self.connection.close()
        if self.guest_agent:
            self.guest_agent.stop()
        super().stop(timeout)
        self.connection.disconnect()
        self.states.save()
        self.states.close()

    def reload(self, new_conf) -> None:
        new_filter, new_rules = domain_events.load_rules(new_conf)
        if new_conf.libvirt.connection_uri != self.uri:
            LOG.warning("reload: [libvirt] connection_uri changed; it takes effect at the "
                        "next restart (still using %s)", self.uri)
        self.events.reconfigure(new_conf, new_filter, new_rules)
        self.conf, self.hostname = new_conf, new_conf.hostname
        LOG.info("reload: event filter from %s, %d ignore pattern(s), only_nova_domains=%s",
                 new_filter.origin, len(new_rules.patterns), new_rules.only_nova)

    def health(self) -> Health:
        hang = self.connection.hang
        if hang.hung:
            return Health(False, f"libvirt {self.uri}: {hang.describe()}; reconnecting")
        hung = self.connection.hung_for()
        if hung is not None:
            return Health(False, f"libvirt {self.uri}: no answer to the connection for "
                                 f"{hung:.0f}s (libvirtd hung?)")
        detail = self.connection.status
        if self.connection.connected and hang.last:
            detail += f"; {hang.describe()}"
        return Health(self.connection.connected, detail)

    def threads(self):
        loop = libvirt_connection.event_loop_thread()
        return [t for t in (loop, *super().threads()) if t is not None]

    def ticked(self) -> str | None:
        return libvirt_connection.event_loop_stuck()

    # -- state flusher ----------------------------------------------------------------------
    def _flusher(self) -> None:
        while not self.stopping:
            if self.states.wait_dirty(1.0):
                self.sleep(0.2)  # batch a storm into one write
                self.states.flush_if_dirty()
