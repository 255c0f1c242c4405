"""Fixtures of the hostmonitor tests: the namespace topology (tests/fixtures/hm_topology.py)
with a real masakari-api reachable over the management link."""
from __future__ import annotations

import pytest

from tests.fixtures.hm_topology import Topology
from tests.fixtures.masakari_api import available


@pytest.fixture(scope="session")
def topo(tmp_path_factory):
    if not available():
        pytest.fail("masakari-api is not installed (set MASAKARI_VENV)")
    t = Topology(tmp_path_factory.mktemp("hm-api"))
    yield t
    t.close()


@pytest.fixture
def links_up(topo):
    topo.all_up()
    yield topo
    topo.all_up()
