"""Fixtures of the instancemonitor tests: a real libvirtd per test (the test driver), and
a helper that runs ha-instancemonitor as a separate process against it and the real API."""
from __future__ import annotations

import pytest

from tests.fixtures.libvirtd import Libvirtd
from tests.helpers import Daemon, write_conf


@pytest.fixture
def libvirtd(tmp_path):
    d = Libvirtd(tmp_path / "libvirtd")
    d.workdir.mkdir()
    d.start()
    d.hold()
    yield d
    d.stop()


@pytest.fixture
def make_daemon(tmp_path, masakari_api, libvirtd):
    """make_daemon(hostname, **instancemonitor_opts) -> started Daemon (stopped after)."""
    started = []

    def make(hostname, start=True, sections=None, **opts):
        state = tmp_path / "state"
        state.mkdir(exist_ok=True)
        im = {"reconnect_initial_interval": 0.1, "reconnect_max_interval": 0.5,
              "keepalive_interval": 1, "keepalive_count": 2, **opts}
        conf = write_conf(tmp_path / "monitors.conf", hostname=hostname, state_path=state,
                          endpoint=masakari_api.endpoint,
                          sections={"libvirt": {"connection_uri": libvirtd.uri},
                                    "instancemonitor": im, **(sections or {})})
        d = Daemon("instancemonitor", conf)
        started.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in started:
        d.stop()
        d.notify.close()


def vm_events(api, host) -> list[tuple[str, str, str]]:
    """(event, instance_uuid, vir_domain_event) of the VM notifications the API stored."""
    return [(n["payload"]["event"], n["payload"]["instance_uuid"],
             n["payload"]["vir_domain_event"])
            for n in api.notifications(type="VM", hostname=host)]


def vm_sent(api, host) -> list[tuple[str, str, str, int]]:
    """(event, instance_uuid, vir_domain_event, answer status) of every VM notification
    POSTed to the API, in order: a re-send shows here (409), not in vm_events()."""
    return [(p.payload["event"], p.payload["instance_uuid"], p.payload["vir_domain_event"],
             p.status) for p in api.posts(type="VM", hostname=host)]


def outbox_rows(state_path) -> list[dict]:
    """The daemon's outbox as `ha-monitors outbox list` shows it (decision included)."""
    from monitors.history import ReadModel
    from monitors.outbox import Outbox
    box = Outbox(str(state_path / "outbox.sqlite"))
    try:
        return ReadModel(box).list(type="VM")
    finally:
        box.close()
