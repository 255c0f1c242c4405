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
