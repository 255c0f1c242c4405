"""Running an operator's command: no shell, bounded, output captured, one clear line.

The daemons run commands the operator configured (processmonitor's restart commands, a
self-fence command, a fence request). Each must: never go through a shell (the argv is
already split), never read our stdin, end within a timeout (the whole process group is
killed, so a child it left behind cannot outlive the bound), and say what happened in one
line a journal reader understands. Output goes to temporary files, not pipes: a daemon the
command starts and leaves holding them open cannot keep us waiting for an EOF.

    result = command.run(["systemctl", "restart", "nova-compute"], timeout=60)
    result.ok        # exited 0 (stderr output alone is not a failure)
    result.detail    # "ok", "exited with status 1; stderr: ...", "killed by signal 9",
                     # "timed out after 60s (killed)", "cannot run: No such file or directory"
    result.check()   # the result, or CommandError(detail naming the command)
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import subprocess
import tempfile
import time

TAIL = 400            # characters of output quoted in ``detail``
KEEP = 64 * 1024      # bytes of each stream kept in ``stdout``/``stderr`` (the end of it)


class CommandError(Exception):
    """A command that did not succeed; the message names it and says why."""


@dataclasses.dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    ok: bool
    detail: str                 # one line: what happened, with the tail of the output
    returncode: int | None      # None: it could not be run, or it timed out
    stdout: str = ""            # the last KEEP bytes (stdout and stderr when merged)
    stderr: str = ""
    seconds: float = 0.0
    timed_out: bool = False

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    def check(self) -> "Result":
        """The result when it succeeded; else raise CommandError naming the command."""
        if not self.ok:
            raise CommandError(f"{self.command}: {self.detail}")
        return self


def _read(f) -> str:
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - KEEP))
    return f.read().decode("utf-8", "replace")


def run(argv: list[str], timeout: float, *, as_root: bool = False,
        merge_output: bool = False) -> Result:
    """Run ``argv`` without a shell, stdin from /dev/null, in its own session; kill its
    process group after ``timeout`` seconds. Never raises for the command's failures.

    as_root: when the daemon is not root, run it as ``sudo -n ARGV`` (fails at once with
    sudo's error instead of asking for a password). merge_output: stderr into stdout (the
    detail then quotes "output" instead of "stderr")."""
    argv = [str(a) for a in argv]
    if as_root and os.geteuid() != 0:
        argv = ["sudo", "-n", *argv]
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=out if merge_output else err,
                                    start_new_session=True, close_fds=True)
        except OSError as exc:
            return Result(tuple(argv), False, f"cannot run: {exc.strerror or exc}", None,
                          seconds=time.monotonic() - started)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                proc.kill()
            proc.wait()
            return Result(tuple(argv), False, f"timed out after {timeout:g}s (killed)", None,
                          _read(out), "" if merge_output else _read(err),
                          time.monotonic() - started, timed_out=True)
        stdout, stderr = _read(out), ("" if merge_output else _read(err))
    quoted = (stdout if merge_output else stderr).strip()[-TAIL:]
    label = "output" if merge_output else "stderr"
    if rc == 0:
        detail = "ok"
    elif rc > 0:
        detail = f"exited with status {rc}"
    else:
        detail = f"killed by signal {-rc}"
    if quoted:
        detail += f"; {label}: {quoted}"
    return Result(tuple(argv), rc == 0, detail, rc, stdout, stderr,
                  time.monotonic() - started)
