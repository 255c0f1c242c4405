"""Entry point of ha-hostmonitor."""
import sys

from monitors import service

from hostmonitor import opts


def build_sources(conf, emitter_for):
    """One source per concern: this node's links and storage, and peer failure through
    the cluster engine chosen by [host] monitoring_driver."""
    from hostmonitor import peers
    from hostmonitor.local import LocalHostSource

    sources = []
    hm = conf.hostmonitor
    if (hm.management_interfaces or hm.tenant_interfaces or hm.storage_interfaces
            or hm.storage_paths or hm.iscsi_sessions or hm.fc_hosts or hm.multipath_devices):
        # compute_processes alone (it has a default) does not enable local monitoring
        sources.append(LocalHostSource(conf))
    return sources + peers.build(conf, emitter_for)


def main(argv=None) -> int:
    return service.run("hostmonitor", build_sources, argv, register=opts.register_opts,
                       validate=opts.validate)


if __name__ == "__main__":
    sys.exit(main())
