"""Options of the peer part of ha-hostmonitor: group [hostmonitor_peers].

The masakari-monitors compatible [host] options (monitoring_driver, monitoring_interval,
monitoring_samples, restrict_to_remotes, pacemaker_node_type, disable_ipmi_check,
stonith_wait) are registered by monitors.config and honoured as they are.
"""
from __future__ import annotations

import shlex

from oslo_config import cfg

from monitors import config

GROUP = "hostmonitor_peers"

peer_opts = [
    # -- Pacemaker --------------------------------------------------------------------------
    cfg.StrOpt("crm_mon_command", default="crm_mon",
               help="crm_mon executable (PATH lookup). Runs as `crm_mon --output-as=xml -1`; "
                    "CIB_file in the environment is honoured (tests, offline analysis)."),
    cfg.StrOpt("stonith_admin_command", default="stonith_admin",
               help="stonith_admin command (split into arguments like a shell would, never "
                    "run through one), run as `stonith_admin --history NODE --verbose "
                    "--output-as=xml` to read the fencer's history and, with [hostmonitor] "
                    "fencing = pacemaker, as `stonith_admin --fence NODE` to ask for this "
                    "host's fencing."),
    cfg.FloatOpt("command_timeout", default=10.0, min=0.5,
                 help="Timeout in seconds of every Pacemaker command (killed after it)."),
    cfg.FloatOpt("reporter_grace", default=10.0, min=0.0,
                 help="Pacemaker: one node reports a peer failure, the DC (crm_mon's "
                      "current_dc); it records the report in the CIB (node attribute "
                      "compute-ha-monitors-report). Every other node makes the same "
                      "decision, then waits this many seconds (the poll driver adds "
                      "monitoring_interval x monitoring_samples) and reports only when no "
                      "such record has appeared (the DC died or failed)."),
    # -- etcd -------------------------------------------------------------------------------
    cfg.DictOpt("etcd_networks", default={"management": "http://127.0.0.1:2379"},
                help="Monitored networks as name:URL of the local etcd member's client "
                     "address on that network. One lease-backed key per network and host; "
                     "a host is down when its keys on every network have expired."),
    cfg.StrOpt("etcd_prefix", default="/compute-ha-monitors/hostmonitor",
               help="Key prefix shared by every hostmonitor of one cluster."),
    cfg.IntOpt("etcd_lease_ttl", default=10, min=2,
               help="TTL in seconds of this host's lease: a peer is reported down at most "
                    "TTL plus a small margin after it stops refreshing."),
    cfg.FloatOpt("etcd_timeout", default=2.0, min=0.1,
                 help="Timeout in seconds of every etcd request (a slower answer counts as "
                      "no quorum)."),
    cfg.FloatOpt("etcd_self_fence_deadline", default=0.0, min=0.0,
                 help="Seconds after a peer's lease expired by which that peer has fenced "
                      "itself (its [hostmonitor] fencing = etcd self-fence action, taken "
                      "when its own verdict says it is unfit or when it lost its lease). "
                      "The reporter reports a peer whose keys expired with host_status "
                      "NORMAL (Masakari evacuates it) only once this deadline passed; "
                      "before that it reports nothing. 0 = the peers do not self-fence: "
                      "reported UNKNOWN (nothing evacuated) unless [host] "
                      "disable_ipmi_check. Set it on every host, equal to at least the "
                      "self-fence action's worst-case duration plus etcd_lease_ttl, and to "
                      "at least watchdog_timeout + watchdog_lease_bound where a watchdog "
                      "covers a hung hostmonitor (watchdog_device)."),
    cfg.FloatOpt("etcd_reconcile_interval", default=0.0, min=0.0,
                 help="Safety-net full comparison of hosts and live keys, in seconds "
                      "(detection is pushed by the watch). 0 = lease TTL."),
    cfg.FloatOpt("mass_failure_fraction", default=0.5, min=0.0, max=1.0,
                 help="When more than this fraction of the monitored hosts is down at once, "
                      "nothing is sent to Masakari (no mass evacuation): the operator is "
                      "alerted (log CRITICAL, health, <prefix>/mass-failure key)."),
    cfg.FloatOpt("settle_time", default=1.0, min=0.0,
                 help="Seconds a newly missing host waits before it is reported, so leases "
                      "expiring together (a rack losing power) are judged together against "
                      "mass_failure_fraction."),
    cfg.IntOpt("takeover_resend_window", default=120, min=0,
               help="On becoming the reporter, re-send the reports of the previous reporter "
                    "younger than this (seconds): a report it queued but could not deliver "
                    "is not lost; Masakari answers 409 to a duplicate."),
    # -- watchdog (etcd) --------------------------------------------------------------------
    cfg.StrOpt("watchdog_device",
               help="Watchdog device this host feeds while it holds its etcd lease (e.g. "
                    "/dev/watchdog1; the kernel's /dev/watchdog interface). Unset = no "
                    "watchdog (the default). When this host's leases on every network have "
                    "not been refreshed for watchdog_lease_bound seconds, or its etcd "
                    "keep-alive loop (that long) or reconcile loop (etcd_reconcile_interval "
                    "+ that long) made no progress, it stops feeding for good: the "
                    "device resets the host watchdog_timeout seconds later. This is what "
                    "makes etcd_self_fence_deadline hold when hostmonitor itself hangs. "
                    "Needs [host] monitoring_driver = etcd and watchdog_timeout + "
                    "watchdog_lease_bound <= etcd_self_fence_deadline."),
    cfg.IntOpt("watchdog_timeout", default=10, min=1,
               help="Seconds the watchdog waits after the last pet before it resets the "
                    "host (WDIOC_SETTIMEOUT; a driver that rounds it up is refused when the "
                    "deadline no longer holds). Pets every watchdog_timeout / 4 seconds."),
    cfg.FloatOpt("watchdog_lease_bound", default=0.0, min=0.0,
                 help="Seconds without a successful lease refresh (on every network) "
                      "after which this host stops feeding its watchdog. 0 = "
                      "etcd_lease_ttl. At least etcd_lease_ttl (less would reset a host "
                      "whose lease may still be alive)."),
    cfg.BoolOpt("watchdog_disarm_on_stop", default=False,
                help="On a clean stop of ha-hostmonitor, disarm the watchdog (magic close). "
                     "Off by default: a stopped hostmonitor leaves its lease to expire, and "
                     "the peers then report this host NORMAL after etcd_self_fence_deadline "
                     "while it still runs; with the watchdog left armed it resets instead, "
                     "unless the daemon is restarted within watchdog_timeout."),
    cfg.StrOpt("management_interface",
               help="Network interface of the management link. When its operstate is not "
                    "up this host is the isolated one and reports nobody."),
]


def register_opts(conf) -> None:
    config.register_groups(conf, list_opts())


def list_opts():
    """Entry point of oslo-config-generator."""
    return [(GROUP, peer_opts)]


# [host] monitoring_driver (masakari-monitors' values) -> the peer source it enables
PEER_SOURCES = {"default": "pacemaker", "simple": "pacemaker", "pacemaker": "pacemaker",
                "etcd": "etcd", "none": None}


def peer_source(conf) -> str | None:
    """The name of the peer source ``[host] monitoring_driver`` enables (None: none, or a
    value check() refuses at start and on reload)."""
    return PEER_SOURCES.get(conf.host.monitoring_driver)


def check(conf) -> list[str]:
    """Problems of the peer configuration (check-config, start and reload validation)."""
    problems = []
    driver = conf.host.monitoring_driver
    if driver not in PEER_SOURCES:
        problems.append(f"[host] monitoring_driver = {driver}: unknown (accepted: "
                        f"{', '.join(PEER_SOURCES)})")
    if driver == "etcd":
        for name, url in (conf[GROUP].etcd_networks or {}).items():
            if not url.startswith(("http://", "https://")):
                problems.append(f"[{GROUP}] etcd_networks: {name}: {url!r} is not an "
                                "http(s) URL")
    problems += watchdog_problems(conf)
    try:
        if not shlex.split(conf[GROUP].stonith_admin_command):
            raise ValueError("empty")
    except ValueError as exc:
        problems.append(f"[{GROUP}] stonith_admin_command: cannot split it into arguments: "
                        f"{exc}")
    return problems


def lease_bound(conf) -> float:
    p = conf[GROUP]
    return p.watchdog_lease_bound or float(p.etcd_lease_ttl)


def watchdog_problems(conf, timeout: int | None = None) -> list[str]:
    """The watchdog's deadline arithmetic (docs/hostmonitor-peers.md): the peers report
    this host NORMAL no sooner than etcd_self_fence_deadline after its keys expired, so it
    must surely be reset by then: watchdog_timeout + watchdog_lease_bound <= the deadline.
    ``timeout``: the one the device reported, when it differs from the configured one."""
    p = conf[GROUP]
    if not p.watchdog_device:
        return []
    if conf.host.monitoring_driver != "etcd":
        return [f"[{GROUP}] watchdog_device is set but [host] monitoring_driver is "
                f"{conf.host.monitoring_driver!r}: the watchdog is fed by the etcd driver "
                "only (set monitoring_driver = etcd or unset watchdog_device)"]
    problems = []
    bound = lease_bound(conf)
    timeout = p.watchdog_timeout if timeout is None else timeout
    if bound < p.etcd_lease_ttl:
        problems.append(f"[{GROUP}] watchdog_lease_bound {bound:g}s is less than "
                        f"etcd_lease_ttl {p.etcd_lease_ttl}s: the host would reset itself "
                        "while its lease may still be alive")
    if timeout + bound > p.etcd_self_fence_deadline:
        problems.append(f"[{GROUP}] watchdog_timeout {timeout}s + watchdog_lease_bound "
                        f"{bound:g}s = {timeout + bound:g}s exceeds etcd_self_fence_deadline "
                        f"{p.etcd_self_fence_deadline:g}s: the peers would report this host "
                        "NORMAL before it is surely reset (raise etcd_self_fence_deadline "
                        "on every host, or lower the other two)")
    return problems
