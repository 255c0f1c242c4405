"""Shared fixtures: one real masakari-api per test session (tests use their own host
names, so they never see each other's notifications), and helpers to configure and run
the daemons as real processes."""
from __future__ import annotations

import itertools
import os

import pytest

from tests.ci_skips import pytest_runtest_makereport  # noqa: F401 - CI=true: skip = failure
from tests.fixtures.masakari_api import MasakariAPI, available, venv_dir

_hosts = itertools.count(1)


@pytest.fixture(scope="session")
def masakari_api(tmp_path_factory):
    if not available():
        pytest.fail(f"masakari-api is not installed in {venv_dir()}: run `make test`, "
                    "which creates it, or set MASAKARI_VENV")
    api = MasakariAPI(tmp_path_factory.mktemp("masakari-api"))
    api.start()
    yield api
    api.stop()


@pytest.fixture
def host(masakari_api, request):
    """A fresh compute host registered in Masakari, unique to this test."""
    name = f"cmp-{os.getpid()}-{next(_hosts)}"
    masakari_api.ensure_host(name)
    return name


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory):
    """A private RabbitMQ node (tests/fixtures/rabbitmq.py), one per session: the
    broker between masakari-api and masakari-engine."""
    from tests.fixtures.rabbitmq import rabbitmq_fixture

    yield from rabbitmq_fixture(tmp_path_factory)


@pytest.fixture(scope="session")
def masakari_engine(tmp_path_factory, rabbitmq):
    """Real masakari-api + masakari-engine over ``rabbitmq`` with a recording Nova
    stand-in (tests/fixtures/masakari_engine.py), one per session: tests use their
    own host names.  ``masakari_engine.api`` has the MasakariAPI helpers,
    ``masakari_engine.nova`` the recorded Nova calls."""
    from tests.fixtures.masakari_engine import engine_fixture

    yield from engine_fixture(tmp_path_factory, rabbitmq)
