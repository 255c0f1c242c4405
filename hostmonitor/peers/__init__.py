"""Peer failure detection for ha-hostmonitor: Pacemaker (alert agent + poll driver) and etcd.

Each module has one job: ``crm`` runs and parses Pacemaker's CLI tools, ``pacemaker`` is the
poll driver, ``election`` picks the one Pacemaker node that reports a failure (the DC),
``etcd`` the lease/watch/election source, ``sources`` picks one from
``[host] monitoring_driver``. The alert agent lives in ``hostmonitor.alert_agent``.
"""
