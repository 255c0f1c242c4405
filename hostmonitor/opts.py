"""Options of ha-hostmonitor (its own group) and its check-config hook."""
from __future__ import annotations

from oslo_config import cfg

from monitors import config

GROUP = "hostmonitor"

hostmonitor_opts = [
    cfg.ListOpt("management_interfaces", default=[],
                help="Interfaces of the management network (the one the Masakari API is "
                     "reached through). Several interfaces, or a bond/bridge with members, "
                     "count as down only when all are down, degraded when some are."),
    cfg.ListOpt("tenant_interfaces", default=[],
                help="Interfaces of the tenant (neutron) network."),
    cfg.ListOpt("storage_interfaces", default=[],
                help="Interfaces of the storage network."),
    cfg.ListOpt("storage_paths", default=[],
                help="Mount points the VMs depend on; each is checked with a stat in a "
                     "child process abandoned after storage_check_timeout (a hung mount = "
                     "down)."),
    cfg.BoolOpt("storage_heartbeat", default=False,
                help="Also write and read back a small heartbeat file "
                     "(.ha-hostmonitor-<hostname>) in each storage path."),
    cfg.FloatOpt("storage_check_timeout", default=5.0, min=0.1,
                 help="Seconds a storage check may take before the path counts as down."),
    cfg.FloatOpt("storage_check_interval", default=10.0, min=0.2,
                 help="Seconds between storage checks (a hung mount sends no event, so "
                      "storage is the one thing checked periodically)."),
    cfg.ListOpt("iscsi_sessions", default=[],
                help="iSCSI sessions (sysfs name such as session1, or target IQN) whose "
                     "state must be LOGGED_IN (/sys/class/iscsi_session)."),
    cfg.ListOpt("fc_hosts", default=[],
                help="Fibre Channel hosts (host0 ...) whose port_state must be Online "
                     "(/sys/class/fc_host)."),
    cfg.ListOpt("multipath_devices", default=[],
                help="Multipath maps whose paths are counted with `multipathd show paths`: "
                     "no active path = down, some failed = degraded."),
    cfg.StrOpt("sysfs_root", default="/sys",
               help="Root of sysfs for the iSCSI, FC and hardware (EDAC, hwmon) checks "
                    "(tests point it elsewhere)."),
    cfg.ListOpt("compute_processes", default=["nova-compute", "libvirtd"],
                help="Processes that make up the compute service on this node (matched on "
                     "the process name or the basename of an argv element, and on the "
                     "basename of ha-processmonitor's process_name); empty = the compute "
                     "input is always up. They count as down only when ha-processmonitor "
                     "gave up on one (its verdict file in state_path says gave_up) or when "
                     "one that was seen running since this daemon started has been gone "
                     "longer than compute_restart_window."),
    cfg.FloatOpt("compute_restart_window", default=300.0, min=0.0,
                 help="Seconds a compute process (seen running since start) may be gone "
                      "before the compute input counts as down without ha-processmonitor's "
                      "verdict: the safety net when processmonitor is not running. Longer "
                      "than processmonitor's worst case with its defaults ([process] "
                      "restart_retries 3 x ([processmonitor] command_timeout 60 + "
                      "restart_grace 3) + 2 x restart_interval 5 = ~200 s), so a restart "
                      "it is handling is never judged."),
    cfg.StrOpt("profile", default="cattle", choices=("cattle", "pets"),
               help="Which column of the default matrix applies (ignored with "
                    "matrix_file)."),
    cfg.StrOpt("matrix_file",
               help="YAML matrix of health → actions (our format or masakari-monitors' "
                    "consul matrix.yaml). Default: [consul] matrix_config_file, else the "
                    "built-in table for `profile`."),
    cfg.FloatOpt("hold_down", default=30.0, min=0.0,
                 help="Seconds a new condition must hold (in addition to [host] "
                      "monitoring_samples observations) before its actions run. The "
                      "default (30 s) outlasts a switch port flap, a bond failover, a "
                      "kernel linkwatch delay and a short NFS server hiccup: the verdict "
                      "this damps can fence the host, and a false recovery is worse than "
                      "a slow one."),
    cfg.FloatOpt("evaluation_interval", default=10.0, min=0.1,
                 help="Seconds between periodic re-evaluations (each is one observation "
                      "for the damping; link changes are pushed by netlink)."),
    cfg.StrOpt("fencing", default="none", choices=("none", "pacemaker", "etcd"),
               help="How a local verdict that this host is unfit (report_host_failure) "
                    "asks for fencing. This host never reports itself with host_status "
                    "NORMAL: it sends STOPPED/OFFLINE/UNKNOWN (Masakari records it, "
                    "recovers nothing) to every driver, and the peers report NORMAL once "
                    "the fencing is confirmed. none: nothing is fenced (the operator "
                    "decides); pacemaker: `stonith_admin --fence <fence_node>`; etcd: the "
                    "self-fence action, then the etcd leases are given up."),
    cfg.StrOpt("fence_node",
               help="This host's node name in the cluster (default: [DEFAULT] hostname)."),
    cfg.FloatOpt("fence_timeout", default=120.0, min=1.0,
                 help="Seconds the fencing request may take (stonith_admin --timeout; the "
                      "self-fence command is killed after it)."),
    cfg.StrOpt("self_fence_command",
               help="fencing = etcd: command (split like a shell would, run without one) "
                    "that fences this host, e.g. `systemctl reboot --force --force`. It "
                    "must take the host down within [hostmonitor_peers] "
                    "etcd_self_fence_deadline, which the peers wait before reporting "
                    "NORMAL."),
    cfg.StrOpt("self_fence_file",
               help="fencing = etcd, without self_fence_command: a file whose write "
                    "fences this host, e.g. /proc/sysrq-trigger (with self_fence_data "
                    "b). Must exist."),
    cfg.StrOpt("self_fence_data", default="b",
               help="What is written into self_fence_file."),
    cfg.StrOpt("operator_driver",
               help="Delivery driver the notify_operator action goes through (e.g. "
                    "webhook; must be in [delivery] drivers). Unset: notify_operator only "
                    "logs."),
    # -- kernel log and hardware health (hostmonitor/kernel.py, docs/hostmonitor.md) --------
    cfg.BoolOpt("kernel_log", default=True,
                help="Read the kernel log (/dev/kmsg, pushed) with the kernel rules: read-only "
                     "remounts, filesystem errors and hung tasks on the storage_paths feed "
                     "the storage input; oopses, NIC resets and machine checks the health "
                     "input; an OOM kill of a qemu process becomes a VM notification. Runs "
                     "with the local source (interfaces or storage configured)."),
    cfg.StrOpt("kmsg_path", default="/dev/kmsg",
               help="The kernel log device."),
    cfg.StrOpt("kernel_rules_file",
               help="YAML file extending or replacing the shipped kernel-log rules "
                    "(hostmonitor/kmsg_rules.yaml); errors name file:line."),
    cfg.FloatOpt("kernel_qemu_scan_interval", default=2.0, min=0.1,
                 help="Seconds between scans of the qemu processes (pid → instance UUID "
                      "from -uuid), so an OOM-killed qemu is known although its command "
                      "line is gone after the kill; a qemu killed sooner after its start "
                      "may stay unknown (logged; libvirt still reports it)."),
    cfg.FloatOpt("hardware_check_interval", default=60.0, min=0.0,
                 help="Seconds between reads of the hardware counters (EDAC, hwmon alarms, "
                      "rasdaemon, ipmitool); an EDAC/MCE kernel line triggers one at once. "
                      "0 = no hardware checks."),
    cfg.IntOpt("hardware_ce_threshold", default=1000, min=1,
               help="Corrected memory errors (EDAC ce_count per memory controller, or "
                    "rasdaemon) from which the host counts as degraded."),
    cfg.IntOpt("hardware_ue_threshold", default=1, min=1,
               help="Uncorrected memory errors from which the host counts as degraded."),
    cfg.StrOpt("hardware_rasdaemon_db", default="/var/lib/rasdaemon/ras-mc_event.db",
               help="rasdaemon's database, read when it exists (memory-controller events "
                    "against the thresholds; any MCE record = degraded)."),
    cfg.BoolOpt("hardware_ipmi", default=False,
                help="Also run `ipmitool sdr list` (when installed): a sensor whose status "
                     "is not ok/ns = degraded."),
    cfg.StrOpt("drain_driver",
               help="Delivery driver the drain action goes through (must be in [delivery] "
                    "drivers; e.g. webhook to the automation that disables nova-compute so "
                    "nothing new lands on a degraded host). A drain never evacuates. Unset: "
                    "drain only logs."),
]


def register_opts(conf) -> None:
    config.register_groups(conf, list_opts())


def list_opts():
    """Entry point of oslo-config-generator: this node's group and the peers' group."""
    from hostmonitor.peers import opts as peer_opts

    return [(GROUP, hostmonitor_opts), *peer_opts.list_opts()]


def matrix_path(conf) -> str | None:
    return conf.hostmonitor.matrix_file or conf.consul.matrix_config_file or None


def check(conf) -> list[str]:
    """Problems of the files and names this daemon's configuration refers to."""
    from hostmonitor import fencing, links, matrix
    from hostmonitor.peers import opts as peer_opts

    problems = []
    path = matrix_path(conf)
    if path:
        try:
            matrix.load(path)
        except matrix.MatrixError as exc:
            problems.append(str(exc))
    problems += links.missing_interfaces(conf)
    problems += operator_driver_problems(conf)
    problems += fencing.problems(conf)
    problems += kernel_problems(conf)
    problems += peer_opts.check(conf)
    return problems


def operator_driver_problems(conf) -> list[str]:
    drv = conf.hostmonitor.operator_driver
    if drv and drv not in conf.delivery.drivers:
        return [f"[hostmonitor] operator_driver: {drv!r} is not in [delivery] drivers "
                f"{conf.delivery.drivers}: its notifications would never be delivered"]
    return []


def kernel_problems(conf) -> list[str]:
    from hostmonitor import kmsg_rules

    problems = []
    try:
        kmsg_rules.load(conf.hostmonitor.kernel_rules_file)
    except kmsg_rules.RulesError as exc:
        problems.append(str(exc))
    drv = conf.hostmonitor.drain_driver
    if drv == "masakari":
        problems.append("[hostmonitor] drain_driver: masakari does not disable a compute "
                        "service on request (it ignores host_status UNKNOWN): use a driver "
                        "that reaches your automation, e.g. webhook")
    elif drv and drv not in conf.delivery.drivers:
        problems.append(f"[hostmonitor] drain_driver: {drv!r} is not in [delivery] drivers "
                        f"{conf.delivery.drivers}: its notifications would never be "
                        "delivered")
    return problems


def validate(conf) -> None:
    """Start-up and SIGHUP validation: raise ValueError naming the problem."""
    problems = check(conf)
    if problems:
        raise ValueError("; ".join(problems))
