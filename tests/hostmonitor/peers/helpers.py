"""Running the peer sources as a real daemon process (optionally inside a network namespace)."""
from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import Daemon, cli

PEERS_DIR = Path(__file__).parent


class PeerDaemon(Daemon):
    """The real ha-hostmonitor (with no local interfaces configured only the peer source
    runs), optionally inside a network namespace."""

    def __init__(self, conf: Path, env: dict | None = None, netns: str | None = None):
        super().__init__("hostmonitor", conf, env=env,
                         argv_prefix=["ip", "netns", "exec", netns] if netns else None)
        self.netns = netns


def outbox_rows(conf: Path, hostname: str | None = None) -> list[dict]:
    args = ["outbox", "list", "--json"] + (["--host", hostname] if hostname else [])
    out = cli(conf, *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def payloads(api, hostname: str) -> list[dict]:
    return [n["payload"] for n in api.notifications(type="COMPUTE_HOST", hostname=hostname)]


def sent(api, hostname: str) -> list[tuple[dict, int | None]]:
    """(payload, answer status) of every COMPUTE_HOST notification POSTed about
    ``hostname``, in order: an exactly-once claim counts these, because the API answers a
    re-send 409 and stores nothing, so payloads() cannot show it."""
    return [(p.payload, p.status) for p in api.posts(type="COMPUTE_HOST", hostname=hostname)]
