"""Entry point of ha-instancemonitor."""
import sys

from monitors import service

from instancemonitor import opts


def build_sources(conf, emitter_for):
    from instancemonitor.libvirt_source import LibvirtSource
    return [LibvirtSource(conf)]


def main(argv=None) -> int:
    return service.run("instancemonitor", build_sources, argv, register=opts.register_opts,
                       validate=opts.validate)


if __name__ == "__main__":
    sys.exit(main())
