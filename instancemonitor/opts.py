"""Options of ha-instancemonitor (its own group) and its check-config hook."""
from __future__ import annotations

from oslo_config import cfg

from monitors import config

GROUP = "instancemonitor"

instancemonitor_opts = [
    cfg.StrOpt("event_filter_file",
               help="YAML file that replaces or extends the default event table (which "
                    "libvirt events become VM notifications). See docs/instancemonitor.md."),
    cfg.ListOpt("ignore_domains", default=[],
                help="Regular expressions (re.search) on domain names; matching domains "
                     "are never reported."),
    cfg.BoolOpt("only_nova_domains", default=False,
                help="Ignore domains without Nova's metadata "
                     "(namespace http://openstack.org/xmlns/libvirt/nova/1.1)."),
    cfg.FloatOpt("reconnect_initial_interval", default=0.5, min=0.05,
                 help="First delay before reconnecting to libvirtd; doubles up to "
                      "reconnect_max_interval."),
    cfg.FloatOpt("reconnect_max_interval", default=10.0, min=0.1,
                 help="Cap of the reconnect backoff in seconds."),
    cfg.IntOpt("keepalive_interval", default=5, min=1,
               help="libvirt keepalive interval in seconds (masakari-monitors: 5, fixed). "
                    "A libvirtd that answers nothing for keepalive_interval x "
                    "keepalive_count seconds (keepalive on the connection, or a connect "
                    "left waiting that long) is 'libvirtd hung': ERROR in the journal "
                    "(LIBVIRT_STATE=hung), CRITICAL in ha-monitors status, reconnect and "
                    "reconcile once it answers. Measured: detected after 19.5 s at 5 x 3 "
                    "(docs/benchmarks.md)."),
    cfg.IntOpt("keepalive_count", default=3, min=1,
               help="Unanswered keepalives before the connection counts as dead and "
                    "libvirtd as hung (masakari-monitors: 3, fixed)."),
    cfg.BoolOpt("guest_agent_heartbeat", default=False,
                help="Ping the QEMU guest agent of domains that have one (intervals from "
                     "[introspectiveinstancemonitor]) and send QEMU_GUEST_AGENT_ERROR after "
                     "guest_monitoring_failure_threshold failed pings."),
]


def register_opts(conf) -> None:
    config.register_groups(conf, list_opts())


def list_opts():
    """Entry point of oslo-config-generator."""
    return [(GROUP, instancemonitor_opts)]


def check(conf) -> list[str]:
    """Problems of the files this daemon's configuration names (for check-config)."""
    from instancemonitor import domain_rules, event_filter
    problems = []
    try:
        group = conf[GROUP]
    except (cfg.NoSuchOptError, KeyError):
        return problems
    try:
        event_filter.load(group.event_filter_file)
    except event_filter.FilterFileError as exc:
        problems.append(str(exc))
    try:
        domain_rules.compile_patterns(group.ignore_domains)
    except ValueError as exc:
        problems.append(str(exc))
    return problems


def validate(conf) -> None:
    """Refuse to start (or to reload) with a bad filter file or pattern."""
    problems = check(conf)
    if problems:
        raise ValueError("; ".join(problems))
