"""Which peer source runs, chosen by ``[host] monitoring_driver`` (masakari-monitors' option)."""
from __future__ import annotations

import logging

LOG = logging.getLogger(__name__)


def build_peer_sources(conf) -> list:
    driver = (conf.host.monitoring_driver or "default").lower()
    if driver in ("default", "simple", "pacemaker"):
        from hostmonitor.peers.pacemaker import PacemakerPoller

        return [PacemakerPoller(conf)]
    if driver == "etcd":
        from hostmonitor.peers.etcd import EtcdPeers

        return [EtcdPeers(conf)]
    if driver == "none":
        return []
    raise ValueError(f"[host] monitoring_driver = {driver}: unknown (expected default, "
                     "pacemaker, etcd or none)")
