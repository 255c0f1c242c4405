"""Peer failure detection for ha-hostmonitor: Pacemaker (alert agent + poll driver) and etcd.

Each module has one job: ``crm`` runs and parses Pacemaker's CLI tools, ``pacemaker_source``
is the poll driver, ``election`` picks the one node that reports a failure (Pacemaker's DC,
the holder of etcd's election key), ``etcd_source`` the lease/watch I/O of the etcd driver
and ``etcd_decision`` its rules (what to report, when NORMAL), ``etcd`` the etcd client.
``[host] monitoring_driver`` enables one source (``opts.peer_source``); the sources are
registered as entry points (compute_ha_monitors.sources). The alert agent lives in
``hostmonitor.alert_agent``.
"""


def build(conf, emitter_for) -> list:
    """The enabled peer sources, each with its emitter (what the registry does for the
    daemon's entry points; used by hostmonitor.cmd's factory until it builds from them)."""
    from hostmonitor.peers.etcd_source import EtcdSource
    from hostmonitor.peers.pacemaker_source import PacemakerSource

    return [cls(conf, emitter_for(cls.name))
            for cls in (PacemakerSource, EtcdSource) if cls.enabled(conf)]
