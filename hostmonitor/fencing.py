"""Ask for this host to be fenced: the only thing a local verdict may do beyond telling.

A host that judges itself unfit (the matrix's report_host_failure) must never report
itself with host_status NORMAL: to Masakari that means "fenced, evacuate it", and this
host is demonstrably still running. Instead it asks the cluster to fence it, and the
cluster's peers, once fencing is confirmed, are the ones who say NORMAL
(docs/hostmonitor-peers.md). ``[hostmonitor] fencing``:

- ``pacemaker``: ``stonith_admin --fence <fence_node> --timeout N`` (argv, no shell,
  bounded). The fencer records it in its history, which the peers read.
- ``etcd``: etcd has no fencer, so the host fences itself through a configured action
  (``self_fence_command``, or ``self_fence_file`` + ``self_fence_data``, e.g.
  /proc/sysrq-trigger ← ``b``), then gives up its leases so the peers see it gone at once.
  Only a self-fence that succeeded gives the leases up: a failed one keeps them, so the
  peers never assume a fence that did not happen. The peers report NORMAL once the lease
  expired *and* ``[hostmonitor_peers] etcd_self_fence_deadline`` passed.
- ``none``: nothing is fenced; the verdict goes out as UNKNOWN (Masakari records it and
  recovers nothing) and to the operator.

The boundary is the command or the file write: tests replace it with a recorder (a kernel
watchdog cannot be exercised on the test machines; there is no softdog), docs say so.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shlex

from monitors import command

LOG = logging.getLogger(__name__)

NONE, PACEMAKER, ETCD = "none", "pacemaker", "etcd"
METHODS = (NONE, PACEMAKER, ETCD)


@dataclasses.dataclass(frozen=True)
class Result:
    method: str
    ok: bool
    action: str   # what was done, as an operator would type it (no secrets: none are used)
    detail: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def method(conf) -> str:
    return conf.hostmonitor.fencing


def node_name(conf) -> str:
    return conf.hostmonitor.fence_node or conf.hostname


def pacemaker_argv(conf) -> list[str]:
    timeout = max(1, int(round(conf.hostmonitor.fence_timeout)))
    return [*shlex.split(conf.hostmonitor_peers.stonith_admin_command), "--fence",
            node_name(conf), "--timeout", str(timeout)]


def problems(conf) -> list[str]:
    """Configuration problems (check-config, start, SIGHUP)."""
    hm = conf.hostmonitor
    out = []
    if hm.fencing == ETCD and not (hm.self_fence_command or hm.self_fence_file):
        out.append("[hostmonitor] fencing = etcd needs self_fence_command or "
                   "self_fence_file (etcd has no fencer: the host fences itself)")
    if hm.self_fence_command:
        try:
            if not shlex.split(hm.self_fence_command):
                raise ValueError("empty")
        except ValueError as exc:
            out.append(f"[hostmonitor] self_fence_command: cannot split it into "
                       f"arguments: {exc}")
    return out


def _run(argv: list[str], timeout: float) -> tuple[bool, str]:
    """The shared runner (monitors/command.py): no shell, output in temporary files (a
    fence agent that leaves a child behind cannot keep us waiting), its process group
    killed after ``timeout``."""
    result = command.run(argv, timeout, merge_output=True)
    return result.ok, result.detail


def request(conf, give_up_leases=None) -> Result:
    """Ask for this host to be fenced through the configured method (blocking, bounded by
    ``fence_timeout``; the caller runs it off the decision thread). ``give_up_leases``:
    called after a successful etcd self-fence (while this process still runs)."""
    hm = conf.hostmonitor
    how = hm.fencing
    if how == PACEMAKER:
        argv = pacemaker_argv(conf)
        ok, detail = _run(argv, hm.fence_timeout + 5)
        return Result(how, ok, shlex.join(argv), detail)
    if how == ETCD:
        result = self_fence(conf)
        if result.ok and give_up_leases is not None:
            try:
                give_up_leases()
            except Exception as exc:  # noqa: BLE001 - the leases expire by themselves
                LOG.warning("self-fence done, giving up the etcd leases failed (%s): they "
                            "expire after their TTL", exc)
        return result
    return Result(NONE, False, "", "no fencing configured ([hostmonitor] fencing = none)")


def self_fence(conf) -> Result:
    """The self-fence action: a command, else a write into a file (sysrq, a watchdog
    device). What a kernel watchdog would do when the daemon stops feeding it."""
    hm = conf.hostmonitor
    if hm.self_fence_command:
        argv = shlex.split(hm.self_fence_command)
        ok, detail = _run(argv, hm.fence_timeout)
        return Result(ETCD, ok, shlex.join(argv), detail)
    if hm.self_fence_file:
        action = f"write {hm.self_fence_data!r} to {hm.self_fence_file}"
        try:
            # No O_CREAT: a mistyped path must fail, never "succeed" into a new file
            # (the peers would then evacuate a host that is still running).
            fd = os.open(hm.self_fence_file, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, hm.self_fence_data.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            return Result(ETCD, False, action, f"failed: {exc.strerror or exc}")
        return Result(ETCD, True, action, "ok")
    return Result(ETCD, False, "", "no self_fence_command or self_fence_file configured")
