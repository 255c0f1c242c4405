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
    cfg.FloatOpt("freeze_timeout", default=120.0, min=0.0,
                 help="Seconds a watched process may stay stopped (state T: SIGSTOP, a "
                      "tracer) or in uninterruptible sleep (D: hung storage), using no CPU "
                      "and making no context switch, before it counts as dead: it is "
                      "killed (SIGKILL) and restarted like a process that exited. 0 turns "
                      "freeze detection off. A process_list entry's freeze_timeout "
                      "overrides it. The default matches the kernel's "
                      "hung_task_timeout_secs."),
    cfg.FloatOpt("freeze_check_interval", default=2.0, min=0.05,
                 help="Seconds between two looks at the state of the watched pids "
                      "(/proc/<pid>/stat and status, two small reads per pid). The kernel "
                      "pushes no \"stopped for long\" event: this is the one poll. A freeze "
                      "is detected between freeze_timeout and freeze_timeout plus this "
                      "after it began."),
    cfg.FloatOpt("freeze_kill_wait", default=10.0, min=0.0,
                 help="After SIGKILL of a frozen process, seconds to wait for it to exit "
                      "before the restart commands run anyway (a process in D only dies "
                      "when it leaves the kernel; the restart commands may still start a "
                      "new one)."),
    cfg.FloatOpt("liveness_interval", default=10.0, min=0.1,
                 help="Seconds between two runs of a process_list entry's "
                      "liveness_command (each bounded by command_timeout; run by the "
                      "entry's worker thread, never the watcher's). The process counts as "
                      "frozen once the command has failed for freeze_timeout seconds."),
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
