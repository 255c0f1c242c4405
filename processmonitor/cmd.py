"""Entry point of ha-processmonitor: its options and checks; the source kit builds its
source (entry point ``processes``: processmonitor/processes_source.py)."""
import sys

from monitors import service

from processmonitor import opts
from processmonitor.process_list import ProcessListError, load


def validate(conf) -> None:
    """A process list that cannot be read at all, or an option with a bad value, is
    refused (at start and on SIGHUP); oslo.config only checks values when read."""
    for group, names in (("process", ("check_interval", "restart_retries",
                                      "restart_interval", "process_list_path")),
                         ("processmonitor", ("command_timeout", "restart_grace",
                                             "proc_connector"))):
        for name in names:
            getattr(conf[group], name)
    try:
        load(conf.process.process_list_path, conf.hostname)
    except ProcessListError as exc:
        raise ValueError(str(exc)) from None


def main(argv=None) -> int:
    return service.run("processmonitor", argv=argv, register=opts.register_opts,
                       validate=validate)


if __name__ == "__main__":
    sys.exit(main())
