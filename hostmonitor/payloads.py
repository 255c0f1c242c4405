"""Every COMPUTE_HOST payload hostmonitor sends, in one place, with what the engine does.

Same keys and values as masakari-monitors. To masakari-engine
(/work/shared/reference/masakari-engine.md) only one of them is an order:

=========================  ==========================  ====================================
payload                    sent by                      masakari-engine
=========================  ==========================  ====================================
STOPPED/OFFLINE/NORMAL     the peers, fencing confirmed  evacuates every instance of the host
STOPPED/OFFLINE/UNKNOWN    the peers (fencing not        ignores it (records it)
                           confirmed); this host's own
                           verdict (report_host_failure)
STARTED/ONLINE/NORMAL      the peers and this host,      logs it; nothing recovered
                           when the failure cleared
STOPPED/ONLINE/UNKNOWN     notify_operator               ignores it (operator driver only)
STOPPED/-/UNKNOWN          drain (degraded host)         never sent there (drain_driver only)
STARTED/-/UNKNOWN          drain released                never sent there (drain_driver only)
=========================  ==========================  ====================================

host_status NORMAL with STOPPED means "fenced, evacuate it": only :func:`stopped` with
``fenced=True`` builds it, and only the peers call it, once the cluster confirmed the
fencing. A host that can still speak is not fenced, so its own verdict is :func:`unfit`.
The drain payloads differ from the operator notice so that the outbox's deduplication
never takes one for a repeat of the other. Each function returns a fresh dict.
"""
from __future__ import annotations

from monitors.notification import COMPUTE_HOST, Notification


# -- payloads ------------------------------------------------------------------------------
def peer_down(fenced: bool) -> dict:
    """A peer is down; NORMAL only when its power-off is confirmed (fencing history,
    the fencer's alert, an expired etcd lease past the self-fence deadline, or
    disable_ipmi_check)."""
    return {"event": "STOPPED", "cluster_status": "OFFLINE",
            "host_status": "NORMAL" if fenced else "UNKNOWN"}


def back_up() -> dict:
    """A host reported down (by the peers or by itself) is back."""
    return {"event": "STARTED", "cluster_status": "ONLINE", "host_status": "NORMAL"}


def unfit_payload() -> dict:
    """report_host_failure, this host's own verdict: never NORMAL (see the module doc)."""
    return peer_down(fenced=False)


def operator_notice_payload() -> dict:
    """notify_operator: still in the cluster, something it needs is lost."""
    return {"event": "STOPPED", "cluster_status": "ONLINE", "host_status": "UNKNOWN"}


def drain_payload() -> dict:
    """drain: "take this host out of scheduling" (to [hostmonitor] drain_driver only)."""
    return {"event": "STOPPED", "host_status": "UNKNOWN"}


def drain_release_payload() -> dict:
    """drain released: "put it back" (to [hostmonitor] drain_driver only)."""
    return {"event": "STARTED", "host_status": "UNKNOWN"}


# -- notifications -------------------------------------------------------------------------
def stopped(hostname: str, fenced: bool, generated_time=None) -> Notification:
    """A peer is down: :func:`peer_down` for ``hostname``."""
    return Notification.create(COMPUTE_HOST, hostname, peer_down(fenced), generated_time)


def started(hostname: str, generated_time=None) -> Notification:
    """``hostname`` is back: :func:`back_up`."""
    return Notification.create(COMPUTE_HOST, hostname, back_up(), generated_time)


def unfit(hostname: str) -> Notification:
    return Notification.create(COMPUTE_HOST, hostname, unfit_payload())


def operator_notice(hostname: str) -> Notification:
    return Notification.create(COMPUTE_HOST, hostname, operator_notice_payload())


def drain(hostname: str) -> Notification:
    return Notification.create(COMPUTE_HOST, hostname, drain_payload())


def drain_release(hostname: str) -> Notification:
    return Notification.create(COMPUTE_HOST, hostname, drain_release_payload())
