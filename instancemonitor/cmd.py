"""Entry point of ha-instancemonitor: its options, and the sources the registry builds
(entry points ``compute_ha_monitors.sources`` of this package: ``libvirt``)."""
import sys

from monitors import service

from instancemonitor import opts


def main(argv=None) -> int:
    return service.run("instancemonitor", argv=argv, register=opts.register_opts,
                       validate=opts.validate)


if __name__ == "__main__":
    sys.exit(main())
