"""Options of ha-processmonitor (its own group) and its check-config hook."""
from __future__ import annotations

import os

from oslo_config import cfg

from monitors import config

GROUP = "processmonitor"

processmonitor_opts = [
    cfg.FloatOpt("command_timeout", default=60.0, min=0.1,
                 help="Seconds each start/restart command (and its pre/post commands) may "
                      "run; a command still running then is killed and counts as failed."),
    cfg.FloatOpt("restart_grace", default=3.0, min=0.0,
                 help="After restart commands succeeded, seconds to wait for a matching "
                      "process to run; if none does, the attempt counts as failed."),
    cfg.BoolOpt("proc_connector", default=True,
                help="Learn about new processes from the kernel's proc connector (needs "
                     "root in the root network namespace; falls back to the [process] "
                     "check_interval scan when refused)."),
]


def register_opts(conf) -> None:
    config.register_groups(conf, list_opts())


def list_opts():
    """Entry point of oslo-config-generator."""
    return [(GROUP, processmonitor_opts)]


def check(conf) -> list[str]:
    """Problems of the files this daemon's configuration names (for check-config)."""
    from processmonitor import process_list

    path = conf.process.process_list_path
    if not os.path.lexists(path):
        # kolla-ansible and the Juju charm deploy only the instance and host monitors and
        # ship no list (the charm even names one): the shared file must still pass. The
        # daemon itself refuses to start without it.
        return [f"{path}: warning: no such file: ha-processmonitor cannot start without "
                "its process list ([process] process_list_path); ignore this on a node "
                "that does not run ha-processmonitor"]
    try:
        plist = process_list.load(path, conf.hostname)
    except process_list.ProcessListError as exc:
        return [str(exc)]
    empty = []
    if not plist.entries and not plist.errors:
        empty = [f"{plist.path}:1: warning: no process listed: ha-processmonitor would "
                 "watch nothing"]
    return plist.errors + [f"warning: {w}" for w in plist.warnings] + empty
