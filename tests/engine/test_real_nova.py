"""The recovery loop against a real Nova (tests/fixtures/nova.py: PyPI nova 34 with the fake
virt driver, placement, conductor, scheduler, three nova-compute services), through the
real masakari-engine over RabbitMQ. Nova's own records are read back: its services
(forced_down, status, disabled_reason), where each server now runs, its instance actions.

What the recording stand-in could not show: our force-down is a real PUT at microversion
2.53 with a token Nova's keystonemiddleware validated; the engine's evacuate is one Nova
accepts and carries out (the instance is rebuilt on another compute service); resurrect
gives the host back to Nova's scheduler.
"""
from __future__ import annotations

import pytest

from hostmonitor import payloads
from monitors import actions
from monitors.history import ReadModel
from tests.engine.test_recovery_loop import MASAKARI_HOST_FAILED, making_monitors
from tests.fixtures import nova as nova_fixture
from tests.helpers import wait_for

pytestmark = pytest.mark.slow

HOSTS = ["rn-a", "rn-b", "rn-c"]


@pytest.fixture(scope="module")
def real(tmp_path_factory, rabbitmq):
    if not nova_fixture.available():
        pytest.fail(f"nova is not installed in {nova_fixture.VENV}: run `make deps`")
    with nova_fixture.behind_engine(tmp_path_factory.mktemp("real-nova"), rabbitmq, HOSTS,
                                    topic="ha_engine_nova") as pair:
        yield pair


@pytest.fixture
def monitors(tmp_path, real):
    with making_monitors(tmp_path, real[0]) as make:
        yield make


def _final(engine, m, nid) -> dict:
    row = m.settled(nid)
    remote = next(d["remote_id"] for d in row["deliveries"] if d["driver"] == "masakari")
    return engine.wait_final(remote, timeout=120)


def test_a_fenced_host_is_forced_down_and_its_instances_rebuilt_elsewhere_then_resurrected(
        real, monitors):
    engine, nova = real
    host = "rn-a"
    servers = [nova.boot(host, f"ha-{i}") for i in range(2)]
    plain = nova.boot(host, "not-ha", ha_enabled=False)
    # Nova refuses an evacuation while the host's nova-compute is up: what the force-down
    # of a fenced host is for
    status, body = nova.call("POST", f"/servers/{servers[0]}/action",
                             {"evacuate": {}}, version="2.53")
    assert status == 400 and "in use" in str(body), (status, body)
    nova.kill_compute(host)  # fenced: the host is off, its nova-compute says nothing more
    m = monitors(force_down=True, resurrect=True)
    nid = m.emit(payloads.stopped(host, fenced=True),
                 decision={"driver": "test", "fencing": "confirmed (test)"}).id
    assert _final(engine, m, nid)["status"] == "finished"
    service = nova.service(host)
    assert service["forced_down"] is True          # ours, before Nova saw it down itself
    assert (service["status"], service["disabled_reason"]) == ("disabled",
                                                               MASAKARI_HOST_FAILED)
    for sid in servers:                              # rebuilt by Nova on another host
        wait_for(lambda sid=sid: nova.server(sid)["status"] == "ACTIVE"
                 and nova.host_of(sid) != host, 60, what=f"{sid} active elsewhere")
        assert nova.host_of(sid) in HOSTS
        # masakari-engine locks the instance for the evacuation and unlocks it after
        assert nova.actions(sid) == ["create", "lock", "evacuate", "unlock"]
    # evacuate_all_instances is masakari's default: the non-HA instance moved as well
    wait_for(lambda: nova.host_of(plain) != host, 60, what="the non-HA instance elsewhere")
    row = ReadModel(m.box).get(nid)
    seen = [(h["kind"], h.get("driver")) for h in row["history"]
            if h["kind"] in ("attempt", "answer")]
    assert seen[:3] == [("attempt", actions.FORCE_DOWN), ("answer", actions.FORCE_DOWN),
                        ("attempt", "masakari")]
    # The peers say STARTED before the host's nova-compute runs again: Nova refuses to
    # force it up while its evacuations are `done`, not yet `completed` by that
    # nova-compute's start-up; resurrect waits, changing nothing
    back_id = m.emit(payloads.started(host), decision={"driver": "test"}).id

    def waiting():
        row = ReadModel(m.box).get(back_id)
        return any(h["kind"] == "answer" and h.get("driver") == actions.RESURRECT
                   and h.get("outcome") == "retry" and "has not restarted" in h["message"]
                   for h in row["history"])
    wait_for(waiting, 30, what="resurrect waiting for nova-compute's restart")
    assert nova.service(host)["forced_down"] is True
    assert engine.api.host(host)["on_maintenance"] is True
    nova.start_compute(host)  # it completes the evacuations; resurrect goes through
    back = m.settled(back_id, timeout=90)
    assert {d["driver"]: d["state"] for d in back["deliveries"]} == {
        "masakari": "delivered", actions.RESURRECT: "delivered"}
    service = nova.service(host)
    assert (service["status"], service["forced_down"]) == ("enabled", False)
    wait_for(lambda: nova.service(host)["state"] == "up", 30, what="rn-a up again")
    assert engine.api.host(host)["on_maintenance"] is False
    # back in Nova's scheduler: placement drops the disabled trait, a new server lands there
    wait_for(lambda: nova.schedulable(host), 30, what="rn-a schedulable in placement")
    assert nova.host_of(nova.boot_once_schedulable(host, "after")) == host


def test_an_operator_disable_is_never_undone_by_resurrect(real, monitors):
    engine, nova = real
    host = "rn-b"
    nova.boot(host, "ops-1")
    nova.kill_compute(host)
    m = monitors(force_down=True, resurrect=True)
    nid = m.emit(payloads.stopped(host, fenced=True),
                 decision={"driver": "test", "fencing": "confirmed (test)"}).id
    assert _final(engine, m, nid)["status"] == "finished"
    uuid = nova.service(host)["id"]
    reason = "ops: replace disk sdb (ticket 4711)"
    status, body = nova.call("PUT", f"/os-services/{uuid}",
                             {"status": "disabled", "disabled_reason": reason}, version="2.53")
    assert status == 200, body
    nova.start_compute(host)
    back = m.answered(m.emit(payloads.started(host)).id, actions.RESURRECT)
    assert back is not None
    service = nova.service(host)
    assert (service["status"], service["disabled_reason"]) == ("disabled", reason)
    assert service["forced_down"] is False           # ours, and the host is up: cleared
    assert engine.api.host(host)["on_maintenance"] is True


def test_an_unfenced_host_is_left_alone_by_nova(real, monitors):
    """The host's nova-compute is silent but fencing is not confirmed (host_status UNKNOWN):
    the engine ignores it, we never force it down, and Nova keeps it and its instance as
    they were: nothing is disabled and nothing is evacuated (it may still run its VMs)."""
    engine, nova = real
    host = "rn-c"
    sid = nova.boot(host, "maybe-running")
    nova.kill_compute(host)
    try:
        m = monitors(force_down=True, resurrect=True)
        nid = m.emit(payloads.stopped(host, fenced=False), decision={"driver": "test"}).id
        assert _final(engine, m, nid)["status"] == "ignored"
        row = ReadModel(m.box).get(nid)
        assert [d["driver"] for d in row["deliveries"]] == ["masakari"]  # no force-down
        wait_for(lambda: nova.service(host)["state"] == "down", 30,
                 what="Nova itself sees the silent rn-c down")
        service = nova.service(host)
        assert (service["status"], service["forced_down"]) == ("enabled", False)
        assert engine.api.host(host)["on_maintenance"] is False
        assert nova.host_of(sid) == host and "evacuate" not in nova.actions(sid)
        assert nova.call("GET", f"/os-migrations?source_compute={host}")[1]["migrations"] == []
    finally:
        nova.start_compute(host)
        wait_for(lambda: nova.service(host)["state"] == "up", 60, what="rn-c up again")


def test_nova_holds_a_driver_to_its_token_and_microversion(real):
    """What makes the tests above able to fail where the stand-in could not: without a
    token Nova answers 401; without the 2.53 header the request is read as the old API,
    which names the service by host and binary in the body (400 "'host' is a required
    property"); the same request with both is taken."""
    _, nova = real
    uuid = nova.service("rn-c")["id"]
    body = {"forced_down": False}
    assert nova.call("PUT", f"/os-services/{uuid}", body, version="2.53", token=None)[0] == 401
    status, answer = nova.call("PUT", f"/os-services/{uuid}", body, version=None)
    assert status == 400 and "'host' is a required property" in str(answer), answer
    assert nova.call("PUT", f"/os-services/{uuid}", body, version="2.53")[0] == 200
