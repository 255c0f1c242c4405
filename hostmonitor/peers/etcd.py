"""The etcd client of the peer part: one per network, the key layout, and giving up leases.

Used by the etcd source (hostmonitor.peers.etcd_source) and by a host's own self-fence
(``give_up_leases``, after it fenced itself: the peers see it gone at once instead of after
the TTL). Keys under ``[hostmonitor_peers] etcd_prefix`` are documented in etcd_source.
"""
from __future__ import annotations

import logging
import urllib.parse

import etcd3gw

from hostmonitor.peers.opts import GROUP

LOG = logging.getLogger(__name__)


def make_client(url: str, timeout: float | None) -> etcd3gw.Etcd3Client:
    parts = urllib.parse.urlsplit(url)
    return etcd3gw.Etcd3Client(host=parts.hostname or "127.0.0.1", port=parts.port or 2379,
                               protocol=parts.scheme or "http", timeout=timeout,
                               api_path="/v3/")


def last_part(meta) -> str:
    """The last path element of a key in etcd3gw's metadata (the host name)."""
    key = meta["key"]
    return (key.decode() if isinstance(key, bytes) else key).rsplit("/", 1)[-1]


def give_up_leases(conf) -> list[str]:
    """Revoke this host's liveness leases on every network (after its self-fence
    succeeded): the peers see it gone at once instead of after the TTL. Returns the keys
    whose lease was revoked."""
    p = conf[GROUP]
    prefix = p.etcd_prefix.rstrip("/")
    done = []
    for network, url in p.etcd_networks.items():
        client = make_client(url, p.etcd_timeout)
        key = "/".join((prefix, "alive", network, conf.hostname))
        for _value, meta in client.get(key, metadata=True):
            lease = int(meta.get("lease") or 0)
            if lease:
                etcd3gw.Lease(lease, client).revoke()
                done.append(key)
    LOG.warning("self-fenced: gave up the etcd leases of %s", ", ".join(done) or "nothing")
    return done
