"""``ha-monitors``: the operator's command line.

  notify        hand a failure over (validated, durable first; --wait delivers it now)
  outbox        list | show ID | retry ID | ack ID | purge --delivered-before T
  history       alerts with their source, decision, attempts and answers (--follow, --json)
  status        each daemon, its sources and the outbox; Nagios exit codes
  deliver       run only the delivery worker, as a daemon
  reload        SIGHUP a daemon and wait for its verdict (systemd's ExecReload)
  check-config  validate the configuration and every file it names

Daemon packages contribute options and file checks through entry points
(``oslo.config.opts`` and ``compute_ha_monitors.checks``), so this core module never
imports them.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import sys

from monitors import config  # first: it imports oslo.config without its unused imports
from monitors.config import cfg

CHECKS_NAMESPACE = "compute_ha_monitors.checks"
OPTS_NAMESPACE = "oslo.config.opts"
OPTS_PREFIX = "compute-ha-monitors"


def _load_conf(args, full: bool = True) -> cfg.ConfigOpts:
    """full=False: only the core groups, as ``notify`` without --wait needs (it puts a
    row, it delivers nothing): not the keystoneauth options, oslo.log's or the daemons'
    (their imports were most of the alert agent's wait for ``notify``). Options are read
    only when used, so what is not registered changes nothing that command does."""
    conf = config.new_conf(auth=full)
    if full:
        from monitors import log as mlog

        mlog.register(conf)
        _register_daemon_opts(conf)
    argv = []
    for f in args.config_file or []:
        argv += ["--config-file", f]
    for d in args.config_dir or []:
        argv += ["--config-dir", d]
    return config.load(conf, argv, "ha-monitors")


def _register_daemon_opts(conf) -> None:
    """Register the options of every installed daemon (only our own entry points: loading
    the others, e.g. oslo.service's, would import eventlet)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=OPTS_NAMESPACE):
        if ep.name.startswith(OPTS_PREFIX + "."):
            config.register_groups(conf, ep.load()())


class CLIError(Exception):
    """A one-line error for the operator (exit code ``code``), never a traceback."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _outbox(conf):
    path = config.outbox_path(conf)
    try:
        return config.open_outbox(conf)
    except (OSError, sqlite3.Error) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise CLIError(f"outbox {path}: cannot open it: {why} (uid {os.getuid()}; the "
                       "daemons run as root)") from None


# -- commands ------------------------------------------------------------------------------

def cmd_notify(args) -> int:
    from monitors.notification import InvalidNotification, Notification

    conf = _load_conf(args, full=args.wait)
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        print(f"ha-monitors notify: --payload: not JSON: {exc}", file=sys.stderr)
        return 2
    except RecursionError:
        print("ha-monitors notify: --payload: nested too deeply (a payload is one object "
              "of strings)", file=sys.stderr)
        return 2
    try:
        note = Notification.create(args.type, args.hostname or conf.hostname, payload,
                                   args.generated_time)
    except InvalidNotification as exc:
        print(f"ha-monitors notify: {exc}", file=sys.stderr)
        return 2
    if args.wait:
        # --timeout bounds the whole wait: no single HTTP call may outlast it
        for group, name in (("delivery", "http_timeout"), ("api", "timeout")):
            value = getattr(conf[group], name)
            if value is None or value > args.timeout:
                conf.set_override(name, max(args.timeout, 0.1), group=group)
    from monitors import actions

    box = _outbox(conf)
    result = actions.put(box, conf, note, source=args.source,
                         decision={"by": "ha-monitors notify"})
    print(f"notification {result.id} {'queued' if result.queued else 'already pending'}")
    if not args.wait:
        return 0
    from monitors import drivers as drivers_mod
    from monitors.delivery import DeliveryWorker

    worker = DeliveryWorker(conf, box, drivers_mod.load(
        conf, actions.delivery_drivers(conf)))
    row = worker.deliver_now(result.id, args.timeout)
    worker.stop(1)
    for d in row["deliveries"]:
        print(f"  {d['driver']}: {d['state']} after {d['attempts']} attempt(s)"
              f"{' -> ' + d['remote_id'] if d['remote_id'] else ''}"
              f"{' (' + d['last_message'] + ')' if d['state'] != 'delivered' and d['last_message'] else ''}")
    return {"delivered": 0, "pending": 3, "rejected": 4, "expired": 5,
            "superseded": 6}[row["state"]]


def cmd_outbox(args) -> int:
    from monitors import history

    conf = _load_conf(args)
    box = _outbox(conf)
    read = history.ReadModel(box)
    if args.action == "list":
        rows = read.list(state=args.state, type=args.type, hostname=args.host, limit=args.limit)
        if args.json:
            print(json.dumps(rows, indent=2, sort_keys=True))
        else:
            history.render_outbox(rows, sys.stdout)
        return 0
    if args.action in ("show", "retry", "ack"):
        if args.id is None:
            print(f"ha-monitors outbox {args.action}: an ID is required", file=sys.stderr)
            return 2
        row = read.get(args.id)
        if row is None:
            print(f"ha-monitors outbox: no notification {args.id}", file=sys.stderr)
            return 1
        if args.action == "retry":
            n = box.retry(args.id)
            print(f"notification {args.id}: {n} delivery(ies) queued again")
            return 0
        if args.action == "ack":
            from monitors import follow

            if follow.acknowledge(box, args.id, args.note or ""):
                print(f"notification {args.id}: its failed or unfinished recovery "
                      "acknowledged: kept with its history, no longer reported by status")
                return 0
            if not box.acknowledge(args.id, args.note or ""):
                print(f"ha-monitors outbox ack: notification {args.id} is {row['state']}; "
                      "only rejected or expired ones, or a recovery that failed or did not "
                      "finish, are acknowledged", file=sys.stderr)
                return 1
            print(f"notification {args.id} ({row['state']}) acknowledged: kept with its "
                  "history, no longer reported by status")
            return 0
        if args.json:
            print(json.dumps(row, indent=2, sort_keys=True))
            return 0
        history.render_outbox_row(row, sys.stdout)
        return 0
    if args.action == "purge":
        if not args.delivered_before:
            print("ha-monitors outbox purge: --delivered-before is required", file=sys.stderr)
            return 2
        try:  # as history --since: a duration ago, or ISO 8601 (local time if naive)
            ts = history.parse_since(args.delivered_before, option="--delivered-before")
        except ValueError as exc:
            print(f"ha-monitors outbox purge: {exc}", file=sys.stderr)
            return 2
        print(f"purged {box.purge_delivered(ts)} delivered notification(s)")
        return 0
    return 2


def cmd_history(args) -> int:
    from monitors import history

    conf = _load_conf(args)
    try:
        since = history.parse_since(args.since) if args.since else None
    except ValueError as exc:
        print(f"ha-monitors history: {exc}", file=sys.stderr)
        return 2
    try:
        return history.run(_outbox(conf), since=since, type=args.type, hostname=args.host,
                           state=args.state, limit=args.limit, as_json=args.json,
                           brief=args.brief, follow_=args.follow)
    except KeyboardInterrupt:
        return 0


def cmd_status(args) -> int:
    from monitors import status

    conf = _load_conf(args)
    th = status.Thresholds(stale_after=args.stale_after, pending_warn=args.pending_warn,
                           pending_crit=args.pending_crit, window=args.window)
    box, broken = None, None
    if os.path.exists(config.outbox_path(conf)):
        try:
            box = config.open_outbox(conf)  # not _outbox(): the cause is judged below
        except Exception as exc:  # noqa: BLE001 - reported with the daemons below
            from monitors.backlog import describe
            broken = describe(exc, config.outbox_path(conf)) \
                if isinstance(exc, (OSError, sqlite3.Error)) else f"outbox unreadable: {exc}"
    result = status.collect(conf.state_path, box, args.daemon, th, outbox_error=broken)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        status.render(result, sys.stdout)
    return result["exit_code"]


def unknown_options(conf, files: list[str]) -> list[str]:
    """Options in the files that nothing registered: typos an operator wants to hear of.
    (oslo.config has already parsed the files, so they are well-formed here.)"""
    import difflib

    problems = []
    auth_names = {group: config.api_option_names(conf, group) for group in ("api", "nova")}
    for path in files:
        for number, section, name in config.file_settings(path):
            if section in auth_names:
                # keystoneauth registers a plugin's options only when it loads it: compare
                # with what the configured auth_type accepts
                known = name.replace("-", "_") in auth_names[section]
                choices = auth_names[section]
            else:
                try:
                    choices = _option_names(conf, section)
                    known = name.replace("-", "_") in choices
                except (cfg.NoSuchOptError, KeyError):
                    known, choices = False, []
            if not known and (section, name) not in config.LIBRARY_IGNORED:
                # (those are named by config.ignored_settings(), with the reason)
                close = difflib.get_close_matches(name, sorted(choices), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"{path}:{number}: warning: [{section}] {name}: unknown "
                                f"option{hint}, ignored")
    return problems


def _option_names(conf, section: str) -> set[str]:
    """The names a file may set in ``section``: each option's and its old names (oslo.config
    reads those too). Not ``name in conf``, which is also true of a group's name: [DEFAULT]
    host passed for the [host] group, whether or not an option had that old name."""
    opts = conf._opts if section == "DEFAULT" else conf._groups[section]._opts
    names = set()
    for info in opts.values():
        opt = info["opt"]
        names.add(opt.dest)
        names.update(d.name.replace("-", "_") for d in opt.deprecated_opts
                     if d.name and d.group in (None, section))
    return names


def check_conf(conf) -> list[str]:
    """Every problem of a parsed configuration, each naming its option or file and line."""
    from importlib.metadata import entry_points

    problems = config.problems(conf)
    for ext in entry_points(group=CHECKS_NAMESPACE):
        try:
            problems.extend(ext.load()(conf))
        except Exception as exc:  # noqa: BLE001 - a broken check is itself a problem
            problems.append(f"{ext.name}: check failed: {type(exc).__name__}: {exc}")
    return problems


def cmd_check_config(args) -> int:
    try:
        conf = _load_conf(args)
    except cfg.Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. --config-file naming a directory
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    files = config.config_files(conf)
    checked = check_conf(conf)  # first: loading the auth plugin registers its [api] options
    warnings = unknown_options(conf, files) + config.ignored_settings(conf)
    problems = []
    for line in checked + config.state_group_findings(conf):  # a check's "warning: ..." lines do not fail the config
        (warnings if line.startswith("warning: ") or ": warning: " in line else problems
         ).append(line)
    for line in warnings:
        print(line, file=sys.stderr)
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if problems:
        return 1
    print(f"configuration OK ({', '.join(files) or 'defaults only'})")
    return 0


def cmd_reload(args) -> int:
    """SIGHUP the daemon and wait for the verdict it writes into its status file, so that
    `systemctl reload` fails when the daemon refuses the new configuration."""
    import contextlib
    import signal
    import time

    from monitors import owners, status as st
    from monitors.procfs import pid_namespace

    try:
        conf = _load_conf(args)
    except cfg.Error as exc:
        # The daemon will refuse it too; let it record that (status WARNING), and fail.
        if args.pid:
            with contextlib.suppress(OSError):
                os.kill(args.pid, signal.SIGHUP)
        print(f"ha-monitors reload: {args.daemon} refuses the new configuration, the old "
              f"one stays in force: {exc}", file=sys.stderr)
        return 1
    path = os.path.join(conf.state_path, args.daemon + st.SUFFIX)

    def read() -> dict | None:
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    doc = read()
    if doc is None or doc.get("state") != "running":
        print(f"ha-monitors reload: {args.daemon} is not running (no running status in "
              f"{path})", file=sys.stderr)
        return 1
    pid = args.pid or doc.get("pid")
    if not args.pid and not owners.alive(doc.get("owner", ""), conf.state_path):
        print(f"ha-monitors reload: {args.daemon} (pid {pid}) is gone", file=sys.stderr)
        return 1
    theirs = doc.get("pid_namespace")
    if not args.pid and theirs and theirs != pid_namespace():
        # Its pid names another process here (or none): never signal it.
        print(f"ha-monitors reload: {args.daemon} runs in another PID namespace (a "
              f"container?): its pid {pid} is not ours to signal; run `ha-monitors reload "
              f"{args.daemon}` inside its namespace, or send it SIGHUP there (`docker kill "
              f"--signal HUP <container>`)", file=sys.stderr)
        return 1
    seq = (doc.get("reload") or {}).get("seq", 0)
    try:
        os.kill(int(pid), signal.SIGHUP)
    except (OSError, TypeError, ValueError) as exc:
        print(f"ha-monitors reload: cannot signal {args.daemon} (pid {pid}): {exc}",
              file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        doc = read() or {}
        verdict = doc.get("reload") or {}
        if verdict.get("seq", 0) > seq:
            break
        if doc.get("state") == "stopped" or not os.path.exists(f"/proc/{pid}"):
            print(f"ha-monitors reload: {args.daemon} stopped during the reload",
                  file=sys.stderr)
            return 1
    else:
        print(f"ha-monitors reload: {args.daemon} gave no verdict within {args.timeout:g}s",
              file=sys.stderr)
        return 1
    if not verdict.get("ok"):
        kept = ("what refused it keeps its previous settings, the rest is applied"
                if verdict.get("partial") else "the old one stays in force")
        print(f"ha-monitors reload: {args.daemon} refused the new configuration, {kept}: "
              f"{verdict.get('error')}", file=sys.stderr)
        return 1
    for line in verdict.get("not_applied") or []:
        print(f"ha-monitors reload: {args.daemon}: not applied until restart: {line}",
              file=sys.stderr)
    print(f"{args.daemon} reloaded")
    return 0


def cmd_deliver(args) -> int:
    """Run only the delivery worker, as a daemon (sd_notify, SIGTERM, SIGHUP)."""
    from monitors import service

    argv = []
    for f in args.config_file or []:
        argv += ["--config-file", f]
    for d in args.config_dir or []:
        argv += ["--config-dir", d]
    return service.run("delivery", argv=argv, register=_register_daemon_opts)


def outbox_states() -> tuple[str, ...]:
    from monitors.states import STATES

    return STATES


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ha-monitors", description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", action="append",
                        help=f"configuration file (default {config.DEFAULT_CONFIG_FILE})")
    parser.add_argument("--config-dir", action="append", help="directory of *.conf files")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("notify", help="queue a notification (and deliver it with --wait)")
    p.add_argument("--type", required=True, help="COMPUTE_HOST, PROCESS or VM")
    p.add_argument("--hostname", help="default: [DEFAULT] hostname")
    p.add_argument("--payload", required=True, help="JSON object")
    p.add_argument("--generated-time", help="ISO 8601, UTC if naive (default: now)")
    p.add_argument("--source", default="cli", help="recorded in the history (e.g. pacemaker-alert)")
    p.add_argument("--wait", action="store_true",
                   help="deliver before returning; exit 0 = accepted, 3 = still pending, "
                        "4 = rejected, 5 = expired, 6 = superseded (withdrawn: its "
                        "condition cleared before delivery)")
    p.add_argument("--timeout", type=_seconds, default=30.0, help="seconds for --wait")
    p.set_defaults(func=cmd_notify)

    p = sub.add_parser("outbox", help="inspect and act on the outbox")
    p.add_argument("action", choices=("list", "show", "retry", "ack", "purge"))
    p.add_argument("id", nargs="?", type=int)
    p.add_argument("--state", type=str.lower, choices=outbox_states())
    p.add_argument("--type", type=str.upper, choices=("VM", "PROCESS", "COMPUTE_HOST"))
    p.add_argument("--host")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--delivered-before",
                   help="purge: a duration ago (30d, 12h) or an ISO 8601 time (local time "
                        "if naive, like history --since)")
    p.add_argument("--note", help="ack: why (kept in the history)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_outbox)

    p = sub.add_parser("history", help="alerts: detection, decision, every delivery attempt "
                                       "and the API's answer")
    p.add_argument("--since", help="30s, 10m, 2h, 1d, 1w ago, or an ISO 8601 time (local if "
                                   "naive)")
    p.add_argument("--type", type=str.upper, choices=("VM", "PROCESS", "COMPUTE_HOST"))
    p.add_argument("--host", help="the notification's hostname")
    p.add_argument("--state", type=str.lower, choices=outbox_states())
    p.add_argument("--limit", type=int, default=50, help="the last N alerts (default 50)")
    p.add_argument("--brief", action="store_true", help="one line per alert")
    p.add_argument("--follow", "-f", action="store_true",
                   help="then print new detections, attempts and answers as they happen")
    p.add_argument("--json", action="store_true",
                   help="a JSON array (with --follow: one JSON object per line)")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("status", help="each daemon's state, sources and the outbox; exit 0 OK, "
                                      "1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios/Sensu)")
    p.add_argument("--daemon", action="append",
                   choices=("instancemonitor", "processmonitor", "hostmonitor", "delivery"),
                   help="expected daemon (repeat); default: every daemon that wrote a status "
                        "file")
    p.add_argument("--stale-after", type=float, default=30.0,
                   help="seconds without a status update before a daemon counts as hung")
    p.add_argument("--pending-warn", type=float, default=60.0,
                   help="oldest pending notification age for WARNING (seconds)")
    p.add_argument("--pending-crit", type=float, default=600.0,
                   help="oldest pending notification age for CRITICAL (seconds)")
    p.add_argument("--window", type=float, default=86400.0,
                   help="rejected/expired notifications, and failed recoveries, younger than "
                        "this need attention")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("deliver", help="run only the delivery worker (drains the outbox; "
                                       "for hosts where only alert agents or scripts enqueue)")
    p.set_defaults(func=cmd_deliver)

    p = sub.add_parser("reload", help="reload a daemon (SIGHUP) and wait for its verdict: "
                                      "exit 0 applied, 1 refused or not running")
    p.add_argument("--daemon", required=True,
                   choices=("instancemonitor", "processmonitor", "hostmonitor", "delivery"))
    p.add_argument("--pid", type=int, help="the daemon's pid (systemd: $MAINPID); default: "
                                           "from its status file")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for the verdict")
    p.set_defaults(func=cmd_reload)

    p = sub.add_parser("check-config", help="validate the configuration and its files")
    p.set_defaults(func=cmd_check_config)
    return parser


def main(argv=None) -> int:
    import logging

    args = build_parser().parse_args(argv)
    if args.func is not cmd_deliver:  # a daemon sets up oslo.log itself
        logging.basicConfig(level=logging.ERROR, format="%(levelname)s: %(message)s")
    try:
        return args.func(args)
    except cfg.Error as exc:
        print(f"ha-monitors: configuration error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except CLIError as exc:
        print(f"ha-monitors {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except OSError as exc:  # e.g. --config-file naming a directory
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ha-monitors {args.command}: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"ha-monitors {args.command}: outbox: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback, for any input
        if os.environ.get("HA_MONITORS_DEBUG"):
            raise
        print(f"ha-monitors {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(HA_MONITORS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
