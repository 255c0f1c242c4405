"""Entry point of ha-hostmonitor: its options and the sources the registry builds (this
node's links, storage and kernel as ``local``; peer failure through ``pacemaker`` or
``etcd``, chosen by [host] monitoring_driver), each enabled by its own options."""
import sys

from monitors import service

from hostmonitor import opts


def main(argv=None) -> int:
    return service.run("hostmonitor", argv=argv, register=opts.register_opts,
                       validate=opts.validate)


if __name__ == "__main__":
    sys.exit(main())
