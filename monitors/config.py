"""Configuration: masakari-monitors' groups and options (same names, same meaning) plus ours.

An operator's existing masakarimonitors.conf must work as it is, so every option of
masakari-monitors 22.0.0 is registered here with its name, type and default. Options that
only made sense for its polling design are accepted without effect: they are built with
``ignored()``, which records why in ``IGNORED``, and ``ignored_settings()`` warns of those a
file sets (``ha-monitors check-config`` and every daemon at start); docs/migration.md
lists them. Our own options live in our own groups ([delivery], [webhook], ...).
Daemon-specific groups are registered by each daemon package (its ``opts.py``).
"""
from __future__ import annotations

import copy
import importlib
import os
import re
import sys
from types import ModuleType


class _Deferred(ModuleType):
    """A module imported on first use of one of its attributes. ``ha-monitors notify`` (run
    by Pacemaker's alert agent for every alert) must start fast, and most of its start was
    imports it never uses: keystoneauth (only delivery and ``check-config`` need it), and
    what oslo.config imports up front for features we do not use (stevedore for
    ``config_source`` drivers, netaddr and rfc3986 for IP and URI options). Behaviour is
    unchanged: the first attribute read imports the real module."""

    def __getattr__(self, attr: str):
        if attr.startswith("__"):  # the import system probing: not a use
            raise AttributeError(attr)
        if sys.modules.get(self.__name__) is self:  # still standing in for it
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


def _import_oslo_config():
    """oslo.config, with its up-front imports of stevedore, netaddr and rfc3986 deferred
    until oslo.config uses them (it then finds the real modules through _Deferred).
    Stand-ins are in sys.modules only while oslo.config is imported, so every other
    importer gets the real modules."""
    standing = [] if "oslo_config.cfg" in sys.modules else [
        name for name in ("stevedore", "netaddr", "rfc3986") if name not in sys.modules]
    for name in standing:
        sys.modules[name] = _Deferred(name)
    try:
        from oslo_config import cfg, types
    finally:
        for name in standing:
            if isinstance(sys.modules.get(name), _Deferred):
                del sys.modules[name]
    return cfg, types


cfg, types = _import_oslo_config()
ks_loading = _Deferred("keystoneauth1.loading")

PROJECT = "compute-ha-monitors"
DEFAULT_CONFIG_FILE = "/etc/compute-ha-monitors/monitors.conf"
DEFAULT_CONFIG_DIR = "/etc/compute-ha-monitors/monitors.conf.d"

CONF = cfg.CONF

# --- accepted for compatibility, without effect ------------------------------------------

IGNORED: dict[tuple[str, str], str] = {}
"""(group, option) -> why it is ignored and what replaces it. The one list of such options:
ignored_settings() warns from it, their help (so the generated reference) says it, and
tests/monitors/test_migration.py checks docs/migration.md against it.

Not oslo.config's ``deprecated_for_removal``: that logs only when a value is first read (once
per process), says the value "may be silently ignored in the future" (it is ignored now),
names no file or line, and marks the option DEPRECATED in the sample."""


def ignored(group: str, opt_cls: type[cfg.Opt], name: str, why: str, **kwargs) -> cfg.Opt:
    """A masakari-monitors option accepted so an existing file works, and never read."""
    IGNORED[(group, name)] = why
    return opt_cls(name, help=f"Accepted for compatibility; ignored: {why}.", **kwargs)


# Options masakari-monitors' daemons get from a library they import, not from its own list
# (so not in docs/migration.md's table, which follows that list): deployment tools set
# them (kolla-ansible: [oslo_concurrency] lock_path). We do not register them;
# ignored_settings() names them with the reason (check-config, and each daemon at start),
# not as an unknown option.
LIBRARY_IGNORED: dict[tuple[str, str], str] = {
    ("oslo_concurrency", "lock_path"):
        "masakari-monitors' oslo.concurrency lock directory (its only lock is in-process); "
        "nothing here takes file locks",
    ("oslo_concurrency", "disable_process_locking"):
        "as [oslo_concurrency] lock_path",
}

_NO_DROP = "nothing is dropped; see [delivery] max_age"
_NO_RETRY_LOOP = ("delivery retries with capped backoff; see [delivery] "
                  "retry_initial_interval, retry_max_interval")
_NO_IPMI = ("no ipmitool is run: fencing is confirmed by Pacemaker's fencer (alert agent, "
            "stonith_admin --history); see [host] stonith_wait")
_NO_TCPDUMP = ("no tcpdump: the cluster view comes from Pacemaker (crm_mon, alerts) or "
               "etcd leases")
_NO_CONSUL = ("no Consul driver: this node's networks are watched by netlink; see "
              "[hostmonitor] management_interfaces, tenant_interfaces, storage_interfaces")
_MANAGER = "each daemon is its own program; there are no manager classes to choose"

# --- masakari-monitors compatible groups -------------------------------------------------

default_opts = [
    # os.uname().nodename is what gethostname() returns on Linux, without importing socket
    cfg.StrOpt("hostname", default=os.uname().nodename, deprecated_name="host",
               sample_default="<HOSTNAME>",
               help="This host's name in notifications (as registered in Masakari)."),
    cfg.StrOpt("state_path", default="/var/lib/compute-ha-monitors",
               help="Directory holding all durable state: the outbox and the sources' "
                    "last known state."),
    cfg.StrOpt("state_group", default="",
               help="Group whose members may hand notifications to the outbox, e.g. "
                    "haclient so Pacemaker's alert agent (run as hacluster) can: state_path "
                    "is then kept setgid 2770 in this group and the outbox files 0660. "
                    "Empty = root only (0700, 0600). The units need the ha-state-group.conf "
                    "drop-in (Group=, StateDirectoryMode=2770); secrets then go in a file of "
                    "monitors.conf.d the group cannot read (docs/systemd.md)."),
    ignored("DEFAULT", cfg.StrOpt, "tempdir",
            "no temporary files are written; durable state is in [DEFAULT] state_path"),
    ignored("DEFAULT", cfg.BoolOpt, "monkey_patch",
            "no eventlet, nothing is monkey-patched", default=False),
    ignored("DEFAULT", cfg.ListOpt, "monkey_patch_modules",
            "no eventlet, nothing is monkey-patched", default=[]),
    ignored("DEFAULT", cfg.StrOpt, "instancemonitor_manager", _MANAGER),
    ignored("DEFAULT", cfg.StrOpt, "introspectiveinstancemonitor_manager",
            _MANAGER + " (the guest-agent check is [instancemonitor] guest_agent_heartbeat)"),
    ignored("DEFAULT", cfg.StrOpt, "processmonitor_manager", _MANAGER),
    ignored("DEFAULT", cfg.StrOpt, "hostmonitor_manager", _MANAGER),
]

API = "api"
_API_GROUP = dict(name=API, title="Recovery API",
                  help="How to reach the Masakari API (keystoneauth session and auth "
                       "options, as in masakari-monitors).")
api_opts = [
    cfg.StrOpt("region", default="RegionOne", help="Region name."),
    cfg.StrOpt("api_version", default="v1", help="Masakari API version."),
    cfg.StrOpt("api_interface", default="public", choices=("public", "internal", "admin"),
               help="Interface of the endpoint."),
]

callback_opts = [
    ignored("callback", cfg.IntOpt, "retry_max", _NO_DROP, default=12),
    cfg.IntOpt("retry_interval", default=10, min=0,
               help="Seconds between retries. Used as the default cap of the delivery "
                    "backoff when [delivery] retry_max_interval is not set."),
]

libvirt_opts = [
    cfg.StrOpt("connection_uri", default="qemu:///system", help="libvirt URI."),
]

introspective_opts = [
    cfg.IntOpt("guest_monitoring_interval", default=10, min=1,
               help="Seconds between guest-agent pings."),
    cfg.IntOpt("guest_monitoring_timeout", default=2, min=1,
               help="Seconds a guest-agent ping may take."),
    cfg.IntOpt("guest_monitoring_failure_threshold", default=3, min=1,
               help="Consecutive failed pings before QEMU_GUEST_AGENT_ERROR is sent."),
    cfg.StrOpt("qemu_guest_agent_sock_path",
               default=r"/var/lib/libvirt/qemu/org\.qemu\.guest_agent\..*\.instance-.*\.sock",
               help="Regular expression of the guest agent socket path."),
]

process_opts = [
    cfg.IntOpt("check_interval", default=5, min=1,
               help="Seconds between the safety-net scans of the process table "
                    "(detection itself is pushed by pidfd and the proc connector)."),
    cfg.IntOpt("restart_retries", default=3, min=0,
               help="Restart attempts after the first one fails."),
    cfg.IntOpt("restart_interval", default=5, min=0,
               help="Seconds between restart attempts."),
    ignored("process", cfg.IntOpt, "api_retry_max", _NO_DROP, default=12),
    ignored("process", cfg.IntOpt, "api_retry_interval", _NO_RETRY_LOOP, default=10),
    cfg.StrOpt("process_list_path", default="/etc/masakarimonitors/process_list.yaml",
               help="YAML list of the processes to watch (masakari-monitors' format)."),
]

host_opts = [
    cfg.StrOpt("monitoring_driver", default="default",
               help="Peer-failure driver: default (Pacemaker), etcd."),
    cfg.IntOpt("monitoring_interval", default=60, min=1,
               help="Seconds between polls of the cluster state (poll driver)."),
    cfg.IntOpt("monitoring_samples", default=3, min=1,
               help="Consecutive observations of the same state before acting. The "
                    "default (3) means one observation never acts: hostmonitor's local "
                    "verdict can fence the host, so it must have been seen by a change "
                    "and two re-evaluations ([hostmonitor] evaluation_interval, with "
                    "hold_down 30 s also in force); the Pacemaker poll driver needs 3 "
                    "polls in a row (masakari-monitors' default is 1)."),
    ignored("host", cfg.IntOpt, "api_retry_max", _NO_DROP, default=12),
    ignored("host", cfg.IntOpt, "api_retry_interval", _NO_RETRY_LOOP, default=10),
    cfg.BoolOpt("disable_ipmi_check", default=False,
                help="Do not require fencing confirmation (host_status NORMAL always)."),
    cfg.BoolOpt("restrict_to_remotes", default=False,
                help="Only monitor pacemaker-remote nodes."),
    ignored("host", cfg.IntOpt, "ipmi_timeout", _NO_IPMI, default=5),
    ignored("host", cfg.IntOpt, "ipmi_retry_max", _NO_IPMI, default=3),
    ignored("host", cfg.IntOpt, "ipmi_retry_interval", _NO_IPMI, default=10),
    cfg.IntOpt("stonith_wait", default=30,
               help="Seconds to wait for a fencing confirmation."),
    ignored("host", cfg.IntOpt, "tcpdump_timeout", _NO_TCPDUMP, default=5),
    ignored("host", cfg.ListOpt, "corosync_multicast_interfaces", _NO_TCPDUMP),
    ignored("host", cfg.ListOpt, "corosync_multicast_ports", _NO_TCPDUMP,
            item_type=types.Port()),
    cfg.StrOpt("pacemaker_node_type", default="autodetect",
               choices=("autodetect", "cluster", "remote"),
               help="Which Pacemaker stack this node runs."),
]

consul_opts = [
    ignored("consul", cfg.StrOpt, "agent_manage", _NO_CONSUL),
    ignored("consul", cfg.StrOpt, "agent_tenant", _NO_CONSUL),
    ignored("consul", cfg.StrOpt, "agent_storage", _NO_CONSUL),
    cfg.StrOpt("matrix_config_file",
               help="Consul health/action matrix; used as [hostmonitor] matrix_file when "
                    "that is not set."),
]

kubernetes_opts = [
    ignored("kubernetes", cfg.StrOpt, "monitoring_node_labels",
            "no Kubernetes driver: peers are watched through Pacemaker or etcd; see [host] "
            "monitoring_driver", default=""),
]

# --- our own groups ----------------------------------------------------------------------

delivery_opts = [
    cfg.ListOpt("drivers", default=["masakari"],
                help="Drivers every notification is delivered through (stevedore names in "
                     "compute_ha_monitors.drivers); each delivery is tracked separately."),
    cfg.FloatOpt("http_timeout", default=10.0, min=0.1,
                 help="Timeout in seconds of every HTTP call a driver makes."),
    cfg.FloatOpt("retry_initial_interval", default=1.0, min=0.01,
                 help="First retry delay in seconds; doubles per attempt (with jitter)."),
    cfg.FloatOpt("retry_max_interval",
                 help="Cap of the retry delay in seconds (default: [callback] retry_interval)."),
    cfg.FloatOpt("held_retry_interval", default=300.0, min=0.05,
                 help="Cap of the retry delay in seconds for a notification the recipient "
                      "holds back (Masakari 409 'host is already under maintenance', or "
                      "another conflict that is not a duplicate). It stays pending and is "
                      "delivered at most this long after the host leaves maintenance."),
    cfg.IntOpt("duplicate_notification_detection_interval", default=180, min=0,
               help="masakari-api's option of the same name (set both alike): it answers "
                    "409 'duplicate' to a notification whose type, host and payload equal "
                    "one it stored with a generated_time less than this many seconds "
                    "earlier. A new failure that follows a cleared one of the same subject "
                    "within this window is sent so that it is not taken for that duplicate "
                    "(another form of the payload that masakari-engine treats alike, or "
                    "generated_time at the window's end and its delivery held until then; "
                    "docs/recovery.md). 0 = the recipient detects no duplicates."),
    cfg.IntOpt("max_age", default=0, min=0,
               help="Seconds after which an undelivered notification becomes 'expired' "
                    "(kept and visible). 0 = retry forever."),
    cfg.FloatOpt("retention_days", default=30.0, min=0,
                 help="Delivered (and superseded) notifications and their history older "
                      "than this many days are deleted by the daemons (at start, then "
                      "hourly), so the outbox does not grow forever. Pending, rejected and "
                      "expired ones are never deleted this way. 0 = keep everything."),
    cfg.FloatOpt("lease_seconds", default=60.0, min=1,
                 help="How long a claimed delivery is reserved for its worker; a worker that "
                      "died releases it at once (its owner lock in state_path/owners is "
                      "free), a hung one after this."),
    cfg.IntOpt("workers", default=2, min=1,
               help="Delivery threads per daemon (all daemons of a host share the outbox)."),
    cfg.FloatOpt("idle_poll_interval", default=0.25, min=0.05,
                 help="Safety-net poll of the outbox for rows queued by other processes."),
    cfg.BoolOpt("follow_recovery", default=True,
                help="After Masakari accepted a notification (202 with its "
                     "notification_uuid), follow what masakari-engine does with it (new, "
                     "running, finished, failed, ignored, error) with a low-rate, bounded "
                     "GET /v1/notifications/<uuid> (microversion 1.0), and record it in the "
                     "outbox: ha-monitors history shows it, status reports a recovery that "
                     "ended failed as CRITICAL until acknowledged (outbox ack). One process "
                     "of those sharing the outbox polls each notification."),
    cfg.FloatOpt("follow_first_interval", default=5.0, min=0.05,
                 help="Seconds after the delivery of the first look at the recovery; each "
                      "next look waits twice as long (with jitter), up to "
                      "follow_max_interval."),
    cfg.FloatOpt("follow_max_interval", default=60.0, min=0.05,
                 help="Cap in seconds of the interval between two looks at one recovery."),
    cfg.FloatOpt("follow_max_age", default=3600.0, min=1.0,
                 help="Seconds after the delivery when a recovery without a final status "
                      "(still new, running or error) is no longer followed; it is then "
                      "reported (history, a status WARNING, or CRITICAL if it was error)."),
]

webhook_opts = [
    cfg.URIOpt("url", schemes=["http", "https"], secret=True,
               help="URL the webhook driver POSTs notifications to. It may carry a "
                    "credential (user:password@ or ?token=...): it is never logged as is, "
                    "and messages that quote it show user:***@ and ?token=***."),
    cfg.StrOpt("secret", secret=True,
               help="Key of the HMAC-SHA256 signature sent in X-HA-Signature."),
    cfg.StrOpt("cafile", help="CA bundle to verify the webhook's TLS certificate."),
    cfg.BoolOpt("insecure", default=False, help="Do not verify the TLS certificate."),
]

NOVA = "nova"
_NOVA_GROUP = dict(
    name=NOVA, title="Nova actions (force-down, resurrect)",
    help="The actions that close the recovery loop (docs/recovery.md, 'Closing the loop'). "
         "Credentials: keystoneauth auth and session options in this group; when this group "
         "sets neither auth_type nor auth_section, the [api] credentials and session are "
         "used. The user needs Nova's admin rights on os-services (PUT) and, for resurrect, "
         "Masakari's on hosts.")


def _new_group(spec: dict) -> cfg.OptGroup:
    """A new OptGroup per registration: oslo.config copies a registered OptGroup only
    shallowly, so one shared instance would share set_override() and set_default() across
    ConfigOpts (the running configuration and the one a SIGHUP reload builds, or two in
    one test process)."""
    return cfg.OptGroup(**spec)


nova_opts = [
    cfg.BoolOpt("force_down", default=False,
                help="When a peer host's fencing is confirmed (the COMPUTE_HOST STOPPED goes "
                     "out with host_status NORMAL), mark its nova-compute service "
                     "forced_down in Nova (compute API 2.53, PUT /os-services/{id}) before "
                     "the Masakari notification, so Nova allows evacuation at once instead "
                     "of after service_down_time. Never for host_status UNKNOWN, nor for "
                     "a NORMAL that [host] disable_ipmi_check produced. Then set "
                     "masakari-engine's [DEFAULT] wait_period_after_service_update near 0."),
    cfg.FloatOpt("force_down_hold", default=30.0, min=0.0,
                 help="Seconds the Masakari notification of a fenced host waits for its "
                      "force-down to be acknowledged by Nova; after that it goes anyway "
                      "(the engine's wait_period_after_service_update then decides)."),
    cfg.BoolOpt("resurrect", default=False,
                help="Put a recovered host back in service without a person: when a host "
                     "reported STOPPED (host_status NORMAL) is STARTED again, or a process "
                     "reported STOPPED is STARTED again, clear forced_down (host only), "
                     "re-enable the nova-compute service if (and only if) its "
                     "disabled_reason is one of resurrect_disable_reasons, and take the "
                     "Masakari host off maintenance. Waits while Masakari still recovers "
                     "the host and until Nova sees nova-compute up. Off by default."),
    cfg.ListOpt("resurrect_disable_reasons",
                default=["Masakari detected host failed.",
                         "Masakari detected process failed."],
                help="disabled_reason values that mean 'disabled by Masakari' (the engine's "
                     "[host_failure] and [process_failure] service_disable_reason). A "
                     "service disabled with any other reason was disabled by a person and "
                     "is never re-enabled (nor its Masakari host taken off maintenance)."),
]

messaging_opts = [
    cfg.StrOpt("transport_url", secret=True,
               help="oslo.messaging transport URL of the message bus the 'messaging' "
                    "driver publishes to, e.g. rabbit://user:pass@host:5672/. Needs the "
                    "'messaging' extra (oslo.messaging)."),
    cfg.ListOpt("topics", default=["compute_ha_notifications"],
                help="Notification topics; each notification goes to <topic>.<priority> "
                     "(info for STARTED, warn for STOPPED, as oslo.messaging names them)."),
    cfg.StrOpt("publisher_id", default="compute-ha-monitors",
               help="publisher_id of the notifications; '.<hostname>' is appended."),
    cfg.IntOpt("retry", default=0, min=-1,
               help="Connection retries of one send inside the driver (-1 = forever); the "
                    "outbox retries a failed send with its own backoff, so keep it small."),
]

metrics_opts = [
    cfg.StrOpt("bind", default="",
               help="HOST:PORT (IPv6: [::1]:9461) of this daemon's Prometheus endpoint "
                    "(/metrics); empty = off. Needs the 'metrics' extra (prometheus-client). "
                    "Each daemon needs its own port (e.g. 9461 instancemonitor, 9462 "
                    "processmonitor, 9463 hostmonitor; set it in a per-daemon config file). "
                    "Plain HTTP without authentication: bind it to loopback or a "
                    "management address."),
]


def _groups():
    return [
        (None, default_opts),
        (_new_group(_API_GROUP), api_opts),
        ("callback", callback_opts),
        ("libvirt", libvirt_opts),
        ("introspectiveinstancemonitor", introspective_opts),
        ("process", process_opts),
        ("host", host_opts),
        ("consul", consul_opts),
        ("kubernetes", kubernetes_opts),
        ("delivery", delivery_opts),
        ("webhook", webhook_opts),
        ("metrics", metrics_opts),
        (_new_group(_NOVA_GROUP), nova_opts),
        ("messaging", messaging_opts),
    ]


def register_opts(conf: cfg.ConfigOpts = CONF, auth: bool = True) -> None:
    """Our groups, and (auth) keystoneauth's session, auth and adapter options in [api] and
    [nova]: only what delivers needs those (``ha-monitors notify`` without --wait does
    not, and so does not import keystoneauth)."""
    for group, opts in _groups():
        conf.register_opts(opts, group=group)
    if not auth:
        return
    ks_loading.register_session_conf_options(conf, API)
    ks_loading.register_auth_conf_options(conf, API)
    conf.set_default("auth_type", "password", group=API)
    ks_loading.register_session_conf_options(conf, NOVA)
    ks_loading.register_auth_conf_options(conf, NOVA)
    ks_loading.register_adapter_conf_options(conf, NOVA)
    conf.set_default("service_type", "compute", group=NOVA)


def register_groups(conf: cfg.ConfigOpts, groups) -> None:
    """Register (group, opts) pairs as list_opts() functions return them."""
    for group, opts in groups:
        conf.register_opts(opts, group=None if group == "DEFAULT" else group)


def list_opts():
    """Entry point of oslo-config-generator (oslo.config.opts)."""
    out = []
    for group, opts in _groups():
        name = group.name if isinstance(group, cfg.OptGroup) else (group or "DEFAULT")
        if name == "api":
            opts = (opts + ks_loading.get_session_conf_options()
                    + ks_loading.get_auth_common_conf_options()
                    + ks_loading.get_auth_plugin_conf_options("password"))
        elif name == "nova":
            opts = (opts + ks_loading.get_session_conf_options()
                    + ks_loading.get_auth_common_conf_options()
                    + _adapter_opts())
        out.append((name, opts))
    return out


def _adapter_opts():
    """keystoneauth's adapter options, with service_type defaulting to compute (as
    registered) so the reference and the sample say what is used."""
    out = []
    for opt in ks_loading.get_adapter_conf_options(include_deprecated=False):
        if opt.dest == "service_type":
            opt = copy.deepcopy(opt)
            opt.default = "compute"
        out.append(opt)
    return out


def new_conf(auth: bool = True) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    register_opts(conf, auth=auth)
    return conf


def load(conf: cfg.ConfigOpts, args: list[str] | None, prog: str) -> cfg.ConfigOpts:
    """Parse the command line and the config files. Without options: monitors.conf, then
    monitors.conf.d/*.conf, then the daemon's own <daemon>.conf.d/*.conf (e.g. its metrics
    port), each only if it exists — the same files the systemd units name."""
    default_files = [DEFAULT_CONFIG_FILE] if os.path.exists(DEFAULT_CONFIG_FILE) else []
    own = os.path.join(os.path.dirname(DEFAULT_CONFIG_DIR), f"{prog.removeprefix('ha-')}.conf.d")
    default_dirs = [d for d in dict.fromkeys((DEFAULT_CONFIG_DIR, own)) if os.path.isdir(d)]
    args = list(sys.argv[1:] if args is None else args)
    if os.geteuid() != 0 and default_dirs and not any(
            a == "--config-dir" or a.startswith("--config-dir=") for a in args):
        args, default_dirs = _without_secret_files(args, default_files, default_dirs)
    conf(args=args, project=PROJECT, prog=prog, default_config_files=default_files,
         default_config_dirs=default_dirs)
    return conf


def _without_secret_files(args: list[str], default_files: list[str],
                          default_dirs: list[str]) -> tuple[list[str], list[str]]:
    """A non-root reader (the alert agent as hacluster, `ha-monitors notify` by a group
    member) reads the files of the default config dirs it may read, and leaves out those it
    may not: with ``state_group`` the secrets ([api] password) live in a root-only file of
    monitors.conf.d, which the daemons (root) read and the group must not. oslo.config would
    refuse the whole directory for one unreadable file, so the readable ones are passed as
    files, after the main file, in the order oslo.config reads a directory."""
    readable = []
    for d in default_dirs:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue  # a directory the group may not list holds nothing for it
        readable += [os.path.join(d, f) for f in names
                     if f.endswith(".conf") and os.access(os.path.join(d, f), os.R_OK)]
    if not any(a == "--config-file" or a.startswith("--config-file=") for a in args):
        args = [arg for f in default_files for arg in ("--config-file", f)] + args
    return args + [arg for f in readable for arg in ("--config-file", f)], []


def config_files(conf: cfg.ConfigOpts) -> list[str]:
    """The files a parsed configuration was read from, in oslo.config's order."""
    files = list(conf.config_file or [])
    for directory in conf.config_dir or []:
        if os.path.isdir(directory):
            files += sorted(os.path.join(directory, f) for f in os.listdir(directory)
                            if f.endswith(".conf"))
    return files


def file_settings(path: str):
    """(line number, group, option) of every value set in an ini file, for messages that
    name the line (oslo.config keeps only the file)."""
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return  # oslo.config already refused an unreadable file
    group = "DEFAULT"
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text[0] in "#;" or line[0].isspace():
            continue  # blank, comment or a continuation line
        if text.startswith("["):
            group = text.strip("[]").strip()
            continue
        cut = min((i for i in (text.find("="), text.find(":")) if i > 0), default=-1)
        if cut > 0:
            yield number, group, text[:cut].strip()


def ignored_settings(conf: cfg.ConfigOpts) -> list[str]:
    """A warning for every option of IGNORED that a configuration file sets, naming the file,
    line, group and option, why it has no effect and what replaces it."""
    out = []
    for path in config_files(conf):
        for number, group, name in file_settings(path):
            why = IGNORED.get((group, name)) or LIBRARY_IGNORED.get((group, name))
            if why:
                out.append(f"{path}:{number}: warning: [{group}] {name}: ignored, {why}")
    return out


def state_group_findings(conf: cfg.ConfigOpts) -> list[str]:
    """With [DEFAULT] state_group: the group must exist, must be able to read the main file
    (the alert agent reads it), and must not be able to read a secret (``secret=True``
    options such as [api] password belong in a root-only file of monitors.conf.d).
    Lines with ": warning: " are warnings, others problems."""
    import grp
    import stat

    group = conf.state_group
    if not group:
        return []
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return [f"[DEFAULT] state_group: no group named {group!r}"]
    out = []
    files = config_files(conf)
    for index, path in enumerate(files):
        try:
            st = os.stat(path)
        except OSError:
            continue
        readable = bool(st.st_mode & stat.S_IROTH or (st.st_gid == gid and st.st_mode & stat.S_IRGRP))
        if index == 0 and not readable:
            out.append(f"{path}: warning: group {group} ([DEFAULT] state_group) cannot read "
                       "it; the Pacemaker alert agent (hacluster) needs it: chgrp "
                       f"{group} and chmod 0640")
        if not readable:
            continue
        for number, section, name in file_settings(path):
            if _is_secret(conf, section, name):
                out.append(f"{path}:{number}: warning: [{section}] {name} is a secret in a file "
                           f"group {group} ([DEFAULT] state_group) can read: move it to a "
                           "0600 root:root file of monitors.conf.d")
    return out


def _is_secret(conf: cfg.ConfigOpts, section: str, name: str) -> bool:
    """Whether an option is marked secret; [api]'s auth plugin options (password, ...) are
    registered only when the plugin loads, so they are looked up in the plugin."""
    try:
        opt = conf._get_opt_info(name, None if section == "DEFAULT" else section)["opt"]
        return bool(getattr(opt, "secret", False))
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError, KeyError):
        pass
    if section != API:
        return False
    try:
        plugin_opts = ks_loading.get_auth_plugin_conf_options(conf.api.auth_type or "password")
    except Exception:  # noqa: BLE001 - an unknown plugin is reported elsewhere
        plugin_opts = ks_loading.get_auth_plugin_conf_options("password")
    return any(o.dest == name.replace("-", "_") and o.secret for o in plugin_opts)


def retry_max_interval(conf: cfg.ConfigOpts) -> float:
    value = conf.delivery.retry_max_interval
    return float(value if value is not None else max(conf.callback.retry_interval, 1))


def outbox_path(conf: cfg.ConfigOpts) -> str:
    return os.path.join(conf.state_path, "outbox.sqlite")


# masakari 22.0.0 accepts notification hostnames matching ^[a-zA-Z0-9-._]*$; an empty one is
# refused by our own checks (monitors.notification), so every detection would be dropped.
_HOSTNAME = re.compile(r"^[a-zA-Z0-9._-]{1,255}$")
# oslo.config's "Value for option X from LocationInfo(location=<...>, detail='F') is not
# valid: why": the file is named by where(), the rest is noise to an operator.
_OSLO_NOISE = re.compile(r"^Value for option \S+ (?:from LocationInfo\(.*?\) )?is not valid: ")


def where(conf: cfg.ConfigOpts, group: str | None, *names: str) -> str:
    """``path:line: `` of the last file line that sets [group] name (any of ``names``, e.g.
    an option and its deprecated name), or ``""`` when no file sets it."""
    group = group or "DEFAULT"
    found = ""
    for path in config_files(conf):
        for number, section, name in file_settings(path) or ():
            if section == group and name in names:
                found = f"{path}:{number}: "
    return found


def _value_problem(conf, group: str | None, name: str, exc: Exception) -> str:
    from monitors.secrets import mask_text

    text = mask_text(_OSLO_NOISE.sub("", str(exc)))
    return f"{where(conf, group, name)}[{group or 'DEFAULT'}] {name}: {text}"


def open_outbox(conf: cfg.ConfigOpts):
    """The shared outbox, shared with [DEFAULT] state_group when one is set."""
    from monitors.outbox import Outbox

    return Outbox(outbox_path(conf), group=conf.state_group or None)


def problems(conf: cfg.ConfigOpts) -> list[str]:
    """Every problem of a parsed configuration, each naming its group and option (and the
    file and line that set it).

    oslo.config checks types only when a value is read, so read them all now: a daemon
    must refuse a bad file at start (or on SIGHUP), not fail later on first use."""
    from monitors import drivers as drivers_mod

    out = []
    groups = [None] + [g for g in conf.keys() if isinstance(conf[g], cfg.ConfigOpts.GroupAttr)]
    for group in groups:
        target = conf if group is None else conf[group]
        for name in list(target):
            try:
                getattr(target, name)
            except (cfg.Error, ValueError) as exc:
                out.append(_value_problem(conf, group, name, exc))
    for check in (_hostname_problems, _state_path_problems, _api_problems, _nova_problems,
                  _metrics_problems):
        try:
            out += check(conf)
        except (cfg.Error, ValueError):
            pass  # it reads a value that failed to parse: reported above

    if any("[delivery] drivers: " in line or "[webhook] url: " in line for line in out):
        return out
    available = drivers_mod.available()
    for name in conf.delivery.drivers:
        if name not in available:
            out.append(f"[delivery] drivers: unknown driver {name!r} "
                       f"(available: {', '.join(available)})")
    if "webhook" in conf.delivery.drivers and not conf.webhook.url:
        out.append("[webhook] url: required because [delivery] drivers names webhook")
    if "messaging" in conf.delivery.drivers and not conf.messaging.transport_url:
        out.append("[messaging] transport_url: required because [delivery] drivers names "
                   "messaging")
    return out


def _hostname_problems(conf: cfg.ConfigOpts) -> list[str]:
    if _HOSTNAME.match(conf.hostname or ""):
        return []
    return [f"{where(conf, None, 'hostname', 'host')}[DEFAULT] hostname: {conf.hostname!r} is "
            "not a host name Masakari accepts (1 to 255 of a-z A-Z 0-9 . - _): every "
            "notification of this host would be refused"]


def _state_path_problems(conf: cfg.ConfigOpts) -> list[str]:
    """The outbox lives in state_path: if it cannot be written, every detection is lost."""
    path = conf.state_path
    here = f"{where(conf, None, 'state_path')}[DEFAULT] state_path: {path!r}"
    if not path or not os.path.isabs(path):
        return [f"{here}: must be an absolute directory path"]
    if os.path.exists(path):
        if not os.path.isdir(path):
            return [f"{here}: not a directory"]
        if not os.access(path, os.W_OK | os.X_OK):
            return [f"{here}: not writable by uid {os.getuid()} "
                    f"({'read-only file system' if _read_only(path) else 'permission denied'})"
                    ": the outbox could not record a single detection"]
        return []
    parent = os.path.dirname(path.rstrip("/")) or "/"
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        return [f"{here}: does not exist and cannot be created ({parent} is not writable "
                f"by uid {os.getuid()})"]
    return []


def _read_only(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _api_problems(conf: cfg.ConfigOpts) -> list[str]:
    """An auth_type that names no keystoneauth plugin, or a plugin missing a required
    option, would fail only at the first delivery: refuse it up front."""
    if "masakari" not in conf.delivery.drivers:
        return []
    auth_type = conf.api.auth_type
    here = where(conf, "api", "auth_type", "auth_plugin")
    plugins = auth_plugin_names()
    if auth_type not in plugins:
        import difflib

        close = difflib.get_close_matches(auth_type or "", plugins, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return [f"{here}[api] auth_type: {auth_type!r} names no keystoneauth plugin ({hint}"
                f"available: {', '.join(plugins)})"]
    try:
        ks_loading.load_auth_from_conf_options(conf, "api")  # registers its options too
    except Exception as exc:  # noqa: BLE001 - keystoneauth's errors name what is missing
        return [f"{here}[api] auth_type = {auth_type}: {exc}"]
    if auth_type == "none" and not conf.api.endpoint:
        return [f"{here}[api] endpoint: required with auth_type = none (e.g. "
                "http://masakari:15868/v1), or nothing can be delivered"]
    return []


def _nova_problems(conf: cfg.ConfigOpts) -> list[str]:
    """[nova] credentials that would fail at the first force-down or resurrect."""
    from monitors import actions

    auth_type = conf.nova.auth_type
    if not actions.enabled(conf) or not (auth_type or conf.nova.auth_section):
        return []  # off, or the [api] credentials are used (checked above)
    if auth_type and auth_type not in auth_plugin_names():
        import difflib

        close = difflib.get_close_matches(auth_type, auth_plugin_names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return [f"[nova] auth_type: {auth_type!r} names no keystoneauth plugin{hint}"]
    try:
        ks_loading.load_auth_from_conf_options(conf, "nova")  # registers its options too
    except Exception as exc:  # noqa: BLE001 - keystoneauth's errors name what is missing
        return [f"[nova] auth_type = {auth_type}: {exc}"]
    return []


def auth_plugin_names() -> list[str]:
    """keystoneauth's plugin names, from the entry points (not by loading each plugin:
    some log import errors of optional dependencies)."""
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group="keystoneauth1.plugin")})


def api_option_names(conf: cfg.ConfigOpts, group: str = "api") -> set[str]:
    """Every option name (and deprecated name) [api] (or [nova]) accepts with its
    auth_type: ours, the keystoneauth session and common auth options (for [nova] also the
    adapter options), and the plugin's own."""
    opts = ((api_opts if group == "api" else nova_opts + _adapter_opts())
            + ks_loading.get_session_conf_options()
            + ks_loading.get_auth_common_conf_options())
    try:
        opts = opts + [o._to_oslo_opt() for o in
                       ks_loading.get_plugin_options(conf[group].auth_type)]
    except Exception:  # noqa: BLE001 - an unknown plugin is reported by problems()
        pass
    names = set()
    for opt in opts:
        names.add(opt.dest)
        names.add(opt.name)
        names.update(d.name for d in getattr(opt, "deprecated_opts", ()) or () if d.name)
    return {n.replace("-", "_") for n in names}


def _metrics_problems(conf: cfg.ConfigOpts) -> list[str]:
    """A bad bind, or a bind without prometheus-client, refused up front (not at serve)."""
    from monitors import metrics

    if not conf.metrics.bind:
        return []
    try:
        metrics.parse_bind(conf.metrics.bind)
    except ValueError as exc:
        return [f"[metrics] bind: {exc}"]
    if not metrics.AVAILABLE:
        return ["[metrics] bind: set, but prometheus-client is not installed (install the "
                "'metrics' extra, or leave [metrics] bind empty)"]
    return []
