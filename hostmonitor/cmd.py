"""Entry point of ha-hostmonitor."""
import sys

from monitors import service

from hostmonitor import opts


def build_sources(conf, emitter_for):
    """One source per concern: this node's links and storage (when configured), and peer
    failure through the cluster engine chosen by [host] monitoring_driver."""
    from hostmonitor.local_source import LocalSource
    from hostmonitor.peers.sources import build_peer_sources

    sources = []
    if LocalSource.enabled(conf):
        sources.append(LocalSource(conf, emitter_for(LocalSource.name)))
    return sources + build_peer_sources(conf)


def main(argv=None) -> int:
    return service.run("hostmonitor", build_sources, argv, register=opts.register_opts,
                       validate=opts.validate)


if __name__ == "__main__":
    sys.exit(main())
