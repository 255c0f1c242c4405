"""The notification schema check mirrors masakari's: what we refuse, the API would refuse."""
import datetime as dt

import pytest

from monitors.notification import (COMPUTE_HOST, PROCESS, VM, InvalidNotification,
                                   Notification)

UUID = "0b8e3c59-4f5f-4a53-9e0b-6c6cf0e0b1a1"


@pytest.mark.parametrize("ntype,hostname,payload,field", [
    ("HOST", "h1", {"event": "STOPPED"}, "type"),
    (COMPUTE_HOST, "bad host", {"event": "STOPPED"}, "hostname"),
    (COMPUTE_HOST, "", {"event": "STOPPED"}, "hostname"),
    (COMPUTE_HOST, "h1", {"event": "DOWN"}, "payload.event"),
    (COMPUTE_HOST, "h1", {"event": "STOPPED", "host_status": "normal"}, "payload.host_status"),
    (COMPUTE_HOST, "h1", {"event": "STOPPED", "extra": "x"}, "payload.extra"),
    (COMPUTE_HOST, "h1", {}, "payload.event"),
    (PROCESS, "h1", {"event": "STOPPED"}, "payload.process_name"),
    (PROCESS, "h1", {"event": "STOPPED", "process_name": 3}, "payload.process_name"),
    (VM, "h1", {"event": "LIFECYCLE", "vir_domain_event": "STOPPED_FAILED",
                "instance_uuid": "not-a-uuid"}, "payload.instance_uuid"),
    (VM, "h1", {"event": "LIFECYCLE", "instance_uuid": UUID}, "payload.vir_domain_event"),
    (VM, "h1", {"event": "x" * 256, "instance_uuid": UUID, "vir_domain_event": "A"},
     "payload.event"),
])
def test_invalid_notifications_name_the_field(ntype, hostname, payload, field):
    with pytest.raises(InvalidNotification) as err:
        Notification.create(ntype, hostname, payload)
    assert err.value.field == field
    assert field in str(err.value)


@pytest.mark.parametrize("text,expected", [
    ("2026-11-24T10:00:00Z", dt.datetime(2026, 11, 24, 10)),
    ("2026-11-24T12:00:00+02:00", dt.datetime(2026, 11, 24, 10)),
    ("2026-11-24 10:00:00", dt.datetime(2026, 11, 24, 10)),
    ("2026-11-24T10:00:00.123456", dt.datetime(2026, 11, 24, 10, 0, 0, 123456)),
])
def test_generated_time_forms_the_api_accepts(text, expected):
    n = Notification.create(PROCESS, "h1", {"event": "STOPPED", "process_name": "p"}, text)
    assert n.generated_time == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-11-24", "", "10:00"])
def test_generated_time_garbage_is_refused(text):
    with pytest.raises(InvalidNotification) as err:
        Notification.create(PROCESS, "h1", {"event": "STOPPED", "process_name": "p"}, text)
    assert err.value.field == "generated_time"


def test_from_dict_names_missing_and_unknown_keys():
    base = {"type": VM, "hostname": "h", "generated_time": "2026-11-24T10:00:00",
            "payload": {"event": "LIFECYCLE", "instance_uuid": UUID,
                        "vir_domain_event": "STOPPED_FAILED"}}
    assert Notification.from_dict(base).to_dict()["generated_time"].startswith("2026-11-24T10")
    with pytest.raises(InvalidNotification, match="payload: is required"):
        Notification.from_dict({k: v for k, v in base.items() if k != "payload"})
    with pytest.raises(InvalidNotification, match="status: unexpected key"):
        Notification.from_dict({**base, "status": "new"})


def test_priority_and_dedup_key():
    host = Notification.create(COMPUTE_HOST, "h1", {"event": "STOPPED"})
    proc = Notification.create(PROCESS, "h1", {"event": "STOPPED", "process_name": "p"})
    vm = Notification.create(VM, "h1", {"event": "LIFECYCLE", "instance_uuid": UUID,
                                        "vir_domain_event": "STOPPED_FAILED"})
    assert host.priority < proc.priority < vm.priority
    later = Notification.create(COMPUTE_HOST, "h1", {"event": "STOPPED"},
                                "2030-01-01T00:00:00")
    assert later.dedup_key() == host.dedup_key()  # the time is not part of the identity
    assert Notification.create(COMPUTE_HOST, "h2", {"event": "STOPPED"}).dedup_key() \
        != host.dedup_key()
