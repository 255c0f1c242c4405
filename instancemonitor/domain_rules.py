"""Per-domain opt-out: domains whose name matches ``[instancemonitor] ignore_domains`` or
that lack Nova's metadata (``only_nova_domains``) are not reported.

The metadata answer needs a libvirt call, so it is cached per UUID; the cache is filled
when domains are listed at (re)connect and only misses (a domain defined since) cost a
call inside the event callback.
"""
from __future__ import annotations

import re
import threading

NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"


def compile_patterns(patterns: list[str]) -> list[re.Pattern]:
    out = []
    for p in patterns or []:
        try:
            out.append(re.compile(p))
        except re.error as exc:
            raise ValueError(f"[instancemonitor] ignore_domains: bad regular expression "
                             f"{p!r}: {exc}") from None
    return out


class DomainRules:
    def __init__(self, patterns: list[str], only_nova: bool, metadata_ns: str = NOVA_NS):
        self.patterns = compile_patterns(patterns)
        self.only_nova = only_nova
        self.metadata_ns = metadata_ns
        self._nova: dict[str, bool] = {}
        self._lock = threading.Lock()

    def ignored(self, uuid: str, name: str, dom=None) -> str | None:
        """Why the domain is ignored, or None."""
        for p in self.patterns:
            if p.search(name or ""):
                return f"name matches ignore_domains {p.pattern!r}"
        if self.only_nova:
            with self._lock:
                nova = self._nova.get(uuid)
            if nova is None and dom is not None:
                nova = self.learn(uuid, dom)
            if nova is False:
                return f"no metadata in namespace {self.metadata_ns} (only_nova_domains)"
        return None

    def learn(self, uuid: str, dom) -> bool | None:
        """Ask libvirt whether the domain carries the metadata; None if it cannot say."""
        import libvirt
        try:
            dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, self.metadata_ns)
            nova = True
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                return None  # cannot tell: report rather than drop
            nova = False
        with self._lock:
            self._nova[uuid] = nova
        return nova
