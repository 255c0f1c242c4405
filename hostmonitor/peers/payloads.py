"""The COMPUTE_HOST payloads masakari-monitors sends for a peer (same keys and values)."""
from __future__ import annotations

from monitors.notification import COMPUTE_HOST, Notification


def stopped(hostname: str, fenced: bool, generated_time=None) -> Notification:
    """A peer is down. host_status NORMAL only when its power-off is confirmed (fencing
    history or disable_ipmi_check); Masakari does not evacuate a host that is UNKNOWN."""
    return Notification.create(COMPUTE_HOST, hostname,
                               {"event": "STOPPED", "cluster_status": "OFFLINE",
                                "host_status": "NORMAL" if fenced else "UNKNOWN"},
                               generated_time)


def started(hostname: str, generated_time=None) -> Notification:
    return Notification.create(COMPUTE_HOST, hostname,
                               {"event": "STARTED", "cluster_status": "ONLINE",
                                "host_status": "NORMAL"}, generated_time)
