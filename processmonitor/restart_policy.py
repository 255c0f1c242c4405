"""How an entry is restarted: one frozen value, resolved from the configuration.

Resolved when the configuration is loaded and again on each reload (the source swaps
the object); a worker takes the policy it holds when a restart begins and keeps it to the
end of that restart, so a SIGHUP never mixes two configurations in one restart, and
nothing calls back into the source to ask.
"""
from __future__ import annotations

import dataclasses

from processmonitor.process_list import ProcessEntry


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    retries: int            # failed attempts retried this many times ([process] or the entry)
    interval: float         # seconds between attempts ([process] or the entry)
    command_timeout: float  # seconds each command may run ([processmonitor])
    grace: float            # after commands that succeeded, seconds to wait for the process
    hostname: str           # the notifications' hostname ([DEFAULT] hostname)
    freeze_timeout: float = 0.0     # frozen (or liveness failing) this long = dead; 0 off
    freeze_kill_wait: float = 10.0  # after SIGKILL of a frozen pid, wait this for its exit
    liveness_interval: float = 10.0  # between two runs of the entry's liveness_command

    @classmethod
    def from_conf(cls, conf) -> "RestartPolicy":
        return cls(retries=conf.process.restart_retries,
                   interval=conf.process.restart_interval,
                   command_timeout=conf.processmonitor.command_timeout,
                   grace=conf.processmonitor.restart_grace,
                   hostname=conf.hostname,
                   freeze_timeout=conf.processmonitor.freeze_timeout,
                   freeze_kill_wait=conf.processmonitor.freeze_kill_wait,
                   liveness_interval=conf.processmonitor.liveness_interval)

    def for_entry(self, entry: ProcessEntry) -> "RestartPolicy":
        """This policy with the entry's own restart_retries/restart_interval/
        freeze_timeout, if set."""
        return dataclasses.replace(
            self,
            freeze_timeout=self.freeze_timeout if entry.freeze_timeout is None
            else entry.freeze_timeout,
            retries=self.retries if entry.restart_retries is None else entry.restart_retries,
            interval=self.interval if entry.restart_interval is None
            else entry.restart_interval)
