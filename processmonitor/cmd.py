"""Entry point of ha-processmonitor."""
import sys

from monitors import service

from processmonitor import opts
from processmonitor.process_list import ProcessListError, load
from processmonitor.source import ProcessSource


def build_sources(conf, emitter_for):
    return [ProcessSource(conf)]


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
    return service.run("processmonitor", build_sources, argv, register=opts.register_opts,
                       validate=validate)


if __name__ == "__main__":
    sys.exit(main())
