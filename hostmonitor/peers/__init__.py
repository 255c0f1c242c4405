"""Peer failure detection for ha-hostmonitor: Pacemaker (alert agent + poll driver) and etcd.

Each module has one job: ``crm`` runs and parses Pacemaker's CLI tools, ``pacemaker_source``
is the poll driver, ``election`` picks the one node that reports a failure (Pacemaker's DC,
the holder of etcd's election key), ``etcd_source`` the lease/watch I/O of the etcd driver
and ``etcd_decision`` its rules (what to report, when NORMAL), ``etcd`` the etcd client.
``[host] monitoring_driver`` enables one source (``opts.peer_source``); the sources are
registered as entry points (compute_ha_monitors.sources). The alert agent lives in
``hostmonitor.alert_agent``.
"""

