"""End-to-end fixtures: the real masakari-engine (session-wide, tests/conftest.py) and
a fresh compute host per test, registered in Masakari and in the recording Nova."""
from __future__ import annotations

import itertools
import os

import pytest

_hosts = itertools.count(1)


@pytest.fixture
def engine(masakari_engine):
    return masakari_engine


@pytest.fixture
def nova(masakari_engine):
    return masakari_engine.nova


def new_host(engine, prefix: str = "eng") -> str:
    """A compute host unique to this test: a Masakari host and a Nova service (enabled, up)."""
    name = f"{prefix}-{os.getpid()}-{next(_hosts)}"
    engine.api.ensure_host(name)
    return name


@pytest.fixture
def host(engine):
    return new_host(engine)


@pytest.fixture
def peer(engine):
    """A second healthy host: somewhere for evacuated instances to go."""
    return new_host(engine, "peer")


@pytest.fixture
def node(engine, tmp_path):
    """Factory of compute nodes (tests/engine/node.py) with fresh host names; all stopped
    (daemons, stand-in services, links) at the end of the test."""
    from tests.engine.node import Node

    nodes = []

    def make(prefix: str = "cn") -> Node:
        name = new_host(engine, prefix)
        n = Node(engine, tmp_path / name, name)
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        n.stop()


def outcome(engine, hostname: str) -> dict:
    """What an operator would look at: the notifications the API stored for this host
    (type, payload, final status) and the state-changing Nova calls about it."""
    nova = engine.nova
    return {
        "host": hostname,
        "notifications": [(r["type"], r["payload"], r["status"])
                          for r in engine.api.notifications(hostname=hostname)],
        "nova": [(c.method, c.path.split("/")[1], c.action or c.body, c.status)
                 for c in nova.mutations(hostname)],
    }


@pytest.fixture
def record(request):
    """record(scenario, engine, *hosts): append the outcome to $ENGINE_SCENARIOS (JSON
    lines) when set: the source of the table in docs/recovery.md."""
    import json

    def rec(engine, *hosts: str, note: str = "") -> list[dict]:
        rows = [outcome(engine, h) for h in hosts]
        path = os.environ.get("ENGINE_SCENARIOS")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"test": request.node.nodeid, "note": note,
                                    "hosts": rows}, default=str) + "\n")
        return rows
    return rec
