"""ha-pacemaker-alert: the executable Pacemaker runs on node and fencing events.

Install it in the CIB's <alerts> section with the configuration file as the recipient
(docs/hostmonitor-peers.md). Pacemaker gives the event in CRM_alert_* variables:

- fencing, CRM_alert_rc=0, task off/reboot of node X → COMPUTE_HOST STOPPED/OFFLINE/NORMAL
  for X (a fencing only happens with quorum, so it is safe to report at once);
- node X ``lost`` → with quorum, wait up to ``[host] stonith_wait`` seconds for the fencing
  (in a detached waiter, so the agent itself returns at once); none → STOPPED/OFFLINE/
  UNKNOWN (``disable_ipmi_check`` → NORMAL at once);
- node X ``member`` again after we reported it down → STARTED/ONLINE/NORMAL.

The notification is handed to the durable outbox with ``ha-monitors notify`` (no --wait):
it is a local SQLite write, so the agent returns well within Pacemaker's alert timeout even
when the API is down; ha-hostmonitor's delivery worker sends it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

LOG = logging.getLogger("ha-pacemaker-alert")
NOTIFY_TIMEOUT = 20.0  # Pacemaker's default alert timeout is 30 s
MARKERS = "pacemaker-alert"


def _load_conf(config_files: list[str]):
    from monitors import config
    from hostmonitor.peers import opts

    conf = config.new_conf()
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
    from hostmonitor.peers import state

    return state.load(str(_marker_dir(conf) / f"{node}.json"))


def _write_marker(conf, node: str, data: dict) -> None:
    from hostmonitor.peers import state

    state.save(str(_marker_dir(conf) / f"{node}.json"), data)


def _quorum(conf) -> bool | None:
    from hostmonitor.peers import crm

    peers = conf.hostmonitor_peers
    try:
        return crm.cluster_view(peers.crm_mon_command, min(peers.command_timeout, 5.0)).quorum
    except crm.CommandError as exc:
        LOG.error("cannot read quorum: %s", exc)
        return None


def _stopped(fenced: bool) -> dict:
    return {"event": "STOPPED", "cluster_status": "OFFLINE",
            "host_status": "NORMAL" if fenced else "UNKNOWN"}


def handle_event(conf, files: list[str], args) -> int:
    kind = os.environ.get("CRM_alert_kind", "")
    node = os.environ.get("CRM_alert_node", "")
    desc = os.environ.get("CRM_alert_desc", "")
    if not kind or not node:
        LOG.error("not called by Pacemaker: CRM_alert_kind and CRM_alert_node are required")
        return 2
    if node == conf.hostname and kind == "node":
        return 0  # a node never reports itself
    when = _event_time()
    now = time.time()
    if kind == "fencing":
        task = os.environ.get("CRM_alert_task", "")
        rc = os.environ.get("CRM_alert_rc", "")
        if rc != "0" or task not in ("off", "reboot", "poweroff"):
            LOG.warning("fencing of %s did not succeed (task %s, rc %s): %s", node, task, rc,
                        desc)
            return 0  # the waiter started on 'lost' reports UNKNOWN at its deadline
        _write_marker(conf, node, {"state": "fenced", "at": now, "reported": "offline"})
        return notify(files, node, _stopped(True), when)
    if kind != "node":
        return 0  # resource and attribute alerts are not ours
    if desc == "lost":
        quorum = _quorum(conf)
        if not quorum:
            LOG.warning("%s lost but this node has %s: reporting nobody", node,
                        "no quorum" if quorum is False else "no cluster view")
            return 0
        if conf.host.disable_ipmi_check:
            _write_marker(conf, node, {"state": "lost", "at": now, "reported": "offline"})
            return notify(files, node, _stopped(True), when)
        marker = _read_marker(conf, node)
        if marker.get("state") == "fenced" and now - marker.get("at", 0) < conf.host.stonith_wait:
            return 0  # the fencing alert came first and is reported already
        _write_marker(conf, node, {"state": "lost", "at": now})
        argv = [sys.executable, "-m", "hostmonitor.alert_agent", "--await-fencing", node,
                "--since", str(now), "--generated-time", when]
        for f in files:
            argv += ["--config-file", f]
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True,
                         env={k: v for k, v in os.environ.items()
                              if not k.startswith("CRM_alert_")} | {"PYTHONPATH": _root()})
        LOG.warning("%s lost: waiting up to %ss for its fencing", node, conf.host.stonith_wait)
        return 0
    if desc == "member":
        marker = _read_marker(conf, node)
        if marker.get("reported") == "offline" or marker.get("state") == "lost":
            _write_marker(conf, node, {"state": "member", "at": now})
            if marker.get("reported") == "offline":
                return notify(files, node, {"event": "STARTED", "cluster_status": "ONLINE",
                                            "host_status": "NORMAL"}, when)
    return 0


def _root() -> str:
    return str(Path(__file__).resolve().parents[1])


def await_fencing(conf, files: list[str], node: str, since: float, when: str) -> int:
    """Detached waiter of a 'lost' node: the fencing alert (or the node's return) ends it;
    at the deadline the fencer's history is asked once, then UNKNOWN is reported."""
    from hostmonitor.peers import crm

    deadline = since + conf.host.stonith_wait
    while time.time() < deadline:
        marker = _read_marker(conf, node)
        if marker.get("at", 0) > since or marker.get("state") != "lost":
            return 0  # fenced (reported NORMAL) or back as a member
        time.sleep(0.2)
    marker = _read_marker(conf, node)
    if marker.get("state") != "lost" or marker.get("at", 0) > since:
        return 0
    fenced = False
    peers = conf.hostmonitor_peers
    try:
        events = crm.fence_history(peers.stonith_admin_command, node, peers.command_timeout)
        fenced = crm.fenced_since(events, node, dt.datetime.fromtimestamp(
            since, dt.timezone.utc)) is not None
    except crm.CommandError as exc:
        LOG.warning("fencing history of %s unavailable: %s", node, exc)
    _write_marker(conf, node, {"state": "fenced" if fenced else "lost", "at": since,
                               "reported": "offline"})
    return notify(files, node, _stopped(fenced), when)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ha-pacemaker-alert", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--config-file", action="append",
                        help="default: CRM_alert_recipient when it names a .conf file, else "
                             "/etc/compute-ha-monitors/monitors.conf")
    parser.add_argument("--await-fencing", metavar="NODE", help=argparse.SUPPRESS)
    parser.add_argument("--since", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--generated-time", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="ha-pacemaker-alert[%(process)d]: %(levelname)s %(message)s")
    files = _config_files(args)
    try:
        conf = _load_conf(files)
    except Exception as exc:  # noqa: BLE001 - oslo.config errors: say which file, exit
        LOG.error("configuration error in %s: %s", files or "default files", exc)
        return 2
    if args.await_fencing:
        return await_fencing(conf, files, args.await_fencing, args.since or time.time(),
                             args.generated_time or _event_time())
    return handle_event(conf, files, args)


if __name__ == "__main__":
    sys.exit(main())
