"""ha-pacemaker-alert: the executable Pacemaker runs on node and fencing events.

Install it in the CIB's <alerts> section with the configuration file as the recipient
(docs/hostmonitor-peers.md). Pacemaker (as user hacluster) gives the event in CRM_alert_*
variables, on every node at once:

- fencing of node X succeeded (CRM_alert_rc=0; 2.1.5 sets CRM_alert_task=st_notify_fence
  and names the action only in CRM_alert_desc, "Operation reboot of X by Y for ...: OK")
  → COMPUTE_HOST STOPPED/OFFLINE/NORMAL for X (a fencing only happens with quorum);
- node X ``lost`` → a detached waiter (the agent itself returns at once) waits up to
  ``[host] stonith_wait`` seconds for that fencing; none → with quorum, the fencer's history
  is asked once, then STOPPED/OFFLINE/UNKNOWN (``disable_ipmi_check`` → NORMAL at once);
  NORMAL still follows when a later fencing succeeds;
- node X ``member`` again after it was reported down → STARTED/ONLINE/NORMAL.

One node reports each of these: the DC. The others stand by and report only when the DC
has not recorded the report in the CIB within ``[hostmonitor_peers] reporter_grace``
(hostmonitor.peers.election). The notification is handed to the durable outbox with
``ha-monitors notify`` (a local SQLite write, no network), so the agent returns well within
Pacemaker's alert timeout even when the API is down; ha-hostmonitor's delivery worker sends
it. Failures are one line in Pacemaker's log; the detached waiters log to
``<state_path>/pacemaker-alert/agent.log``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from hostmonitor import payloads

LOG = logging.getLogger("ha-pacemaker-alert")
NOTIFY_TIMEOUT = 20.0  # Pacemaker's default alert timeout is 30 s
MARKERS = "pacemaker-alert"
# A fencing seen this recently when the 'lost' alert is handled is this loss's fencing:
# Pacemaker runs the node and the fencing alert of one failure at once (84 ms apart on the
# live cluster), and a node is fenced only after it was lost.
FENCED_RECENTLY = 60.0


def _load_conf(config_files: list[str]):
    from monitors import config
    from hostmonitor.peers import opts

    conf = config.new_conf(auth=False)  # the agent never delivers: no keystoneauth to load
    opts.register_opts(conf)
    argv = []
    for f in config_files:
        argv += ["--config-file", f]
    return config.load(conf, argv, "ha-pacemaker-alert")


def _config_files(args) -> list[str]:
    if args.config_file:
        return args.config_file
    recipient = os.environ.get("CRM_alert_recipient", "")
    if recipient.endswith(".conf") and os.path.isfile(recipient):
        return [recipient]
    return []


def _event_time() -> str:
    epoch = os.environ.get("CRM_alert_timestamp_epoch")
    usec = os.environ.get("CRM_alert_timestamp_usec") or "0"
    if epoch and epoch.isdigit():
        ts = int(epoch) + int(usec) / 1e6 if usec.isdigit() else int(epoch)
        return dt.datetime.fromtimestamp(ts, dt.timezone.utc).replace(tzinfo=None).isoformat()
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat()


def _ha_monitors() -> list[str]:
    exe = Path(sys.executable).parent / "ha-monitors"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "monitors.cli"]


def notify(config_files: list[str], node: str, payload: dict, when: str) -> int:
    """Hand one COMPUTE_HOST notification to the outbox through `ha-monitors notify`."""
    argv = [*_ha_monitors()]
    for f in config_files:
        argv += ["--config-file", f]
    argv += ["notify", "--type", "COMPUTE_HOST", "--hostname", node, "--payload",
             json.dumps(payload), "--generated-time", when, "--source",
             "hostmonitor/pacemaker-alert"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=NOTIFY_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        LOG.error("ha-monitors notify did not finish within %ss for %s", NOTIFY_TIMEOUT, node)
        return 1
    out = (proc.stdout + proc.stderr).strip()
    (LOG.warning if proc.returncode == 0 else LOG.error)(
        "%s %s: %s", node, payload["event"], out or f"exit {proc.returncode}")
    return proc.returncode


def _marker_dir(conf) -> Path:
    path = Path(conf.state_path) / MARKERS
    path.mkdir(parents=True, exist_ok=True)
    return path


def _read_marker(conf, node: str) -> dict:
    """The node's marker ({} when absent; an unreadable one is logged and ignored)."""
    from monitors import statefile

    try:
        return statefile.read(str(_marker_dir(conf) / f"{node}.json")) or {}
    except statefile.StateFileError as exc:
        LOG.error("%s; starting from an empty state", exc)
        return {}


@contextlib.contextmanager
def _marker_lock(conf, node: str):
    """Serialize the read-modify-write of one node's marker: the alerts of one failure run
    concurrently (node 'lost' and the fencing alert), and a 'lost' written after the
    fencing would send the waiter after a fencing that already happened."""
    path = _marker_dir(conf) / f"{node}.lock"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o664)
    except OSError as exc:
        LOG.warning("cannot open %s (%s): marker updates unserialized", path, exc)
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_marker(conf, node: str, data: dict) -> None:
    from monitors import statefile

    path = str(_marker_dir(conf) / f"{node}.json")
    try:
        statefile.write(path, data, sort_keys=True)
    except OSError as exc:
        LOG.error("cannot write %s: %s", path, exc)


def _view(conf):
    """crm_mon's view (quorum, DC) or None when it cannot be read."""
    from hostmonitor.peers import crm

    peers = conf.hostmonitor_peers
    try:
        return crm.cluster_view(peers.crm_mon_command, min(peers.command_timeout, 5.0))
    except crm.CommandError as exc:
        LOG.error("cannot read the cluster state: %s", exc)
        return None


def _settled_view(conf, timeout: float = 15.0):
    """A view with a DC: right after a node is lost (above all the DC itself) the survivors
    elect a new DC for a few seconds, and crm_mon shows none meanwhile."""
    deadline = time.time() + timeout
    while True:
        view = _view(conf)
        if view is not None and view.dc or time.time() >= deadline:
            return view
        time.sleep(0.5)


FENCE_DESC = re.compile(r"Operation (?P<action>\S+) of (?P<target>\S+) by (?P<by>\S+)")


def fencing_action(task: str, desc: str) -> str:
    """Pacemaker 2.1.5 gives task ``st_notify_fence`` and the action only in the text:
    'Operation reboot of node3 by node1 for pacemaker-controld.30569@node1: OK'."""
    if task in ("off", "reboot", "poweroff", "on"):
        return task
    m = FENCE_DESC.match(desc)
    return m.group("action") if m else task


def _spawn(conf, files: list[str], *args: str) -> None:
    """A detached helper (this module again) that outlives the agent: Pacemaker waits for
    the agent (alert timeout), not for the decision. Its log lines go to
    <state_path>/pacemaker-alert/agent.log, not to /dev/null."""
    argv = [sys.executable, "-m", "hostmonitor.alert_agent", *args]
    for f in files:
        argv += ["--config-file", f]
    logpath = _marker_dir(conf) / "agent.log"
    with open(logpath, "a") as logf:
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                         start_new_session=True,
                         env={k: v for k, v in os.environ.items()
                              if not k.startswith("CRM_alert_")} | {"PYTHONPATH": _root()})


def report(conf, files: list[str], node: str, payload: dict, since: float, when: str,
           view, standby_ok: bool = True) -> int:
    """Report ``payload`` for ``node`` once for the whole cluster: now when this node is the
    DC; otherwise (a standby) after [hostmonitor_peers] reporter_grace, and only when the
    DC has not recorded it in the CIB by then (hostmonitor.peers.election)."""
    from hostmonitor.peers import crm, election

    peers = conf.hostmonitor_peers
    event, status = payload["event"], payload["host_status"]
    me = conf.hostname
    if view is None or view.dc != me:
        if standby_ok:
            _spawn(conf, files, "--standby", node, "--event", event, "--host-status", status,
                   "--since", str(since), "--generated-time", when)
            LOG.info("%s %s/%s: standby (the DC %s reports; I report only if it has not "
                     "within %gs)", node, event, status, view.dc if view else "?",
                     peers.reporter_grace)
            return 0
    done = election.recorded(peers.crm_mon_command, node, peers.command_timeout)
    if election.covers(done, event, status, since):
        LOG.info("%s %s/%s: already reported by %s (%s)", node, event, done.host_status,
                 done.by, done.event)
        _mark_reported(conf, node, done.event)
        return 0
    rc = notify(files, node, payload, when)
    if rc == 0:
        _mark_reported(conf, node, event)
        election.record(peers.crm_mon_command, node,
                        crm.Report(event, status, time.time(), me), peers.command_timeout)
    return rc


def _mark_reported(conf, node: str, event: str) -> None:
    with _marker_lock(conf, node):
        marker = _read_marker(conf, node)
        marker["reported"] = "offline" if event == "STOPPED" else "online"
        _write_marker(conf, node, marker)


def handle_event(conf, files: list[str], args) -> int:
    kind = os.environ.get("CRM_alert_kind", "")
    node = os.environ.get("CRM_alert_node", "")
    desc = os.environ.get("CRM_alert_desc", "")
    if not kind or not node:
        LOG.error("not called by Pacemaker: CRM_alert_kind and CRM_alert_node are required")
        return 2
    if kind not in ("fencing", "node"):
        return 0  # resource and attribute alerts are not ours
    if node == conf.hostname:
        return 0  # a node never reports itself
    when = _event_time()
    now = time.time()
    if kind == "fencing":
        task = os.environ.get("CRM_alert_task", "")
        rc = os.environ.get("CRM_alert_rc", "")
        action = fencing_action(task, desc)
        if rc != "0" or action not in ("off", "reboot", "poweroff"):
            LOG.warning("fencing of %s did not succeed (%s, rc %s): %s", node, action, rc,
                        desc)
            return 0  # the waiter started on 'lost' reports UNKNOWN at its deadline
        with _marker_lock(conf, node):
            marker = _read_marker(conf, node)
            since = marker["at"] if marker.get("state") == "lost" \
                else now - conf.host.stonith_wait
            _write_marker(conf, node, {**marker, "state": "fenced", "at": now})
        return report(conf, files, node, payloads.peer_down(True), since, when, _view(conf))
    if desc == "lost":
        view = _view(conf)
        if view is not None and view.dc and not view.quorum:
            LOG.warning("%s lost but this partition has no quorum: reporting nobody", node)
            return 0
        with _marker_lock(conf, node):
            marker = _read_marker(conf, node)
            if marker.get("state") == "fenced" and now - marker.get("at", 0) < FENCED_RECENTLY:
                LOG.info("%s lost: its fencing was already seen %.1fs ago", node,
                         now - marker["at"])
                return 0
            _write_marker(conf, node, {"state": "lost", "at": now})
        _spawn(conf, files, "--await-fencing", node, "--since", str(now),
               "--generated-time", when)
        LOG.info("%s lost: waiting up to %ss for its fencing", node,
                 0 if conf.host.disable_ipmi_check else conf.host.stonith_wait)
        return 0
    if desc == "member":
        from hostmonitor.peers import election

        peers = conf.hostmonitor_peers
        done = election.recorded(peers.crm_mon_command, node, peers.command_timeout)
        with _marker_lock(conf, node):
            marker = _read_marker(conf, node)
            down = marker.get("reported") == "offline" or (done is not None
                                                            and done.event == "STOPPED")
            _write_marker(conf, node, {"state": "member", "at": now,
                                       "reported": marker.get("reported")})
        if down:
            since = done.at if done is not None and done.event == "STOPPED" \
                else marker.get("at", now)
            return report(conf, files, node, payloads.back_up(), since, when, _view(conf))
    return 0


def _root() -> str:
    return str(Path(__file__).resolve().parents[1])


def await_fencing(conf, files: list[str], node: str, since: float, when: str) -> int:
    """Detached waiter of a 'lost' node: the fencing alert (or the node's return) ends it;
    at the deadline the fencer's history is asked once, then the reporter (DC) reports
    STOPPED with UNKNOWN, or NORMAL if the history shows the fencing."""
    from hostmonitor.peers import crm

    wait = 0 if conf.host.disable_ipmi_check else conf.host.stonith_wait
    deadline = since + wait
    while time.time() < deadline:
        marker = _read_marker(conf, node)
        if marker.get("at", 0) > since or marker.get("state") != "lost":
            LOG.info("%s: fenced or back; nothing more to wait for", node)
            return 0
        time.sleep(0.2)
    marker = _read_marker(conf, node)
    if marker.get("state") != "lost" or marker.get("at", 0) > since:
        return 0
    view = _settled_view(conf)
    if view is None or not view.quorum:
        LOG.warning("%s lost but this partition has %s: reporting nobody", node,
                    "no cluster view" if view is None else "no quorum")
        return 0
    fenced = bool(conf.host.disable_ipmi_check)
    if not fenced:
        peers = conf.hostmonitor_peers
        try:
            events = crm.fence_history(peers.stonith_admin_command, node,
                                       peers.command_timeout)
            fenced = crm.fenced_since(events, node, dt.datetime.fromtimestamp(
                since, dt.timezone.utc)) is not None
        except crm.CommandError as exc:
            LOG.warning("fencing history of %s unavailable: %s", node, exc)
    LOG.warning("%s lost %.0fs ago: %s", node, time.time() - since,
                "fenced (history)" if fenced and not conf.host.disable_ipmi_check else
                "reporting without fencing (disable_ipmi_check)" if fenced else
                "fencing not confirmed: UNKNOWN")
    if view.dc != conf.hostname:
        return standby(conf, files, node, payloads.peer_down(fenced), since, when)
    return report(conf, files, node, payloads.peer_down(fenced), since, when, view)


def standby(conf, files: list[str], node: str, payload: dict, since: float, when: str) -> int:
    """A standby's waiter: after reporter_grace, report unless the CIB records it done."""
    time.sleep(conf.hostmonitor_peers.reporter_grace)
    view = _settled_view(conf)
    if view is None or not view.quorum:
        LOG.warning("%s: no quorum any more: reporting nobody", node)
        return 0
    from hostmonitor.peers import election

    peers = conf.hostmonitor_peers
    done = election.recorded(peers.crm_mon_command, node, peers.command_timeout)
    if election.covers(done, payload["event"], payload["host_status"], since):
        LOG.info("%s %s: reported by %s (%s), standing by", node, payload["event"], done.by,
                 done.event)
        _mark_reported(conf, node, done.event)
        return 0
    LOG.warning("%s %s/%s: the DC %s recorded no report within %gs: reporting as standby",
                node, payload["event"], payload["host_status"], view.dc,
                peers.reporter_grace)
    return report(conf, files, node, payload, since, when, view, standby_ok=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ha-pacemaker-alert", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--config-file", action="append",
                        help="default: CRM_alert_recipient when it names a .conf file, else "
                             "/etc/compute-ha-monitors/monitors.conf")
    parser.add_argument("--await-fencing", metavar="NODE", help=argparse.SUPPRESS)
    parser.add_argument("--standby", metavar="NODE", help=argparse.SUPPRESS)
    parser.add_argument("--event", help=argparse.SUPPRESS)
    parser.add_argument("--host-status", help=argparse.SUPPRESS)
    parser.add_argument("--since", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--generated-time", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s ha-pacemaker-alert[%(process)d]: %(levelname)s "
                               "%(message)s" if args.await_fencing or args.standby else
                        "ha-pacemaker-alert[%(process)d]: %(levelname)s %(message)s")
    files = _config_files(args)
    try:
        conf = _load_conf(files)
    except Exception as exc:  # noqa: BLE001 - oslo.config errors: say which file, exit
        LOG.error("configuration error in %s: %s", files or "default files", exc)
        return 2
    try:
        if args.await_fencing:
            return await_fencing(conf, files, args.await_fencing, args.since or time.time(),
                                 args.generated_time or _event_time())
        if args.standby:
            payload = payloads.back_up() if args.event == "STARTED" else payloads.peer_down(
                args.host_status == "NORMAL")
            return standby(conf, files, args.standby, payload, args.since or time.time(),
                           args.generated_time or _event_time())
        return handle_event(conf, files, args)
    except Exception as exc:  # noqa: BLE001 - one clear line in pacemaker.log, not a traceback
        LOG.error("%s failed: %s: %s (node %s, kind %s)", "the alert agent",
                  type(exc).__name__, exc, os.environ.get("CRM_alert_node", args.await_fencing
                                                         or args.standby or "-"),
                  os.environ.get("CRM_alert_kind", "-"))
        return 1


if __name__ == "__main__":
    sys.exit(main())
