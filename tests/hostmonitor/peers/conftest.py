"""Fixtures of the peer tests: Pacemaker peers registered in the real masakari-api."""
from __future__ import annotations

import itertools
import os

import pytest

_n = itertools.count(1)


@pytest.fixture
def peer_names(masakari_api):
    """Factory of unique node names registered as Masakari hosts."""
    def make(*roles: str) -> dict[str, str]:
        run = f"{os.getpid()}-{next(_n)}"
        names = {role: f"pcmk-{run}-{role}" for role in roles}
        for name in names.values():
            masakari_api.ensure_host(name)
        return names
    return make
