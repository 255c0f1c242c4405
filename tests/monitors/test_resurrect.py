"""The resurrect driver when Masakari refuses its maintenance step, against the real
masakari-api (no engine: a notification stays 'new') and the recording Nova stand-in.

Masakari refuses any host update (409 HostInUse) while a notification of *any* host of the
segment is new, running or in error. Resurrect must then wait and ask again, with
Masakari's reason in the outbox history, and touch nothing at Nova: its order (Masakari
first) keeps a retry safe. This path once raised TypeError and was retried for ever as a
driver error (a stale helper signature), which no test saw."""
from __future__ import annotations

import itertools
import os

from hostmonitor import payloads
from monitors import actions, drivers
from monitors.delivery import DeliveryWorker
from monitors.history import ReadModel
from monitors.outbox import Outbox
from tests.helpers import recovery_conf, wait_for

MASAKARI_DISABLED = "Masakari detected host failed."
_seq = itertools.count()


def busy_segment(api):
    """A segment of its own (so no other test's host is held) with two hosts: ``ours``
    recovered by Masakari (on maintenance, nova-compute disabled by it) and ``other``
    with a notification Masakari has not finished (no engine here: it stays 'new')."""
    n = f"{os.getpid()}-{next(_seq)}"
    segment = api.create_segment(f"resurrect-busy-{n}")
    ours, other = f"res-ours-{n}", f"res-other-{n}"
    api.add_host(segment, ours)
    api.add_host(segment, other)
    api.set_maintenance(ours, True)
    api.stub.set_service(ours, status="disabled", disabled_reason=MASAKARI_DISABLED,
                         state="up")
    status, body = api.post_notification({"notification": {
        "type": "VM", "hostname": other, "generated_time": "2026-11-26T04:00:00",
        "payload": {"event": "LIFECYCLE", "instance_uuid": "0" * 32,
                    "vir_domain_event": "STOPPED_FAILED"}}})
    assert status == 202, body
    return ours


def test_a_segment_under_recovery_holds_resurrect_and_nova_is_untouched(
        masakari_api, tmp_path):
    api = masakari_api
    ours = busy_segment(api)
    conf = recovery_conf(tmp_path, api, resurrect=True)
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    worker = DeliveryWorker(conf, box, drivers.load(conf, [actions.RESURRECT]), threads=1)
    nid = box.put(payloads.started(ours), source="test", drivers=[actions.RESURRECT]).id
    worker.start()
    try:
        def two_answers():
            answers = [h for h in ReadModel(box).get(nid)["history"]
                       if h["kind"] == "answer"]
            return len(answers) >= 2 and answers
        answers = wait_for(two_answers, 30, what="resurrect asked twice")
    finally:
        worker.stop(5)
    row = ReadModel(box).get(nid)
    box.close()
    # Held and asked again, with Masakari's own reason: not a driver error, not dropped.
    delivery = row["deliveries"][0]
    assert delivery["state"] == "pending", delivery
    assert delivery["last_status"] == 409
    for answer in answers:
        assert answer["message"].startswith("Masakari: "), answer
        assert "in-use to process notifications" in answer["message"], answer
        assert "TypeError" not in answer["message"]
    # Masakari first: nothing was changed anywhere.
    assert api.stub.mutations(ours) == []
    service = api.stub.service(ours)
    assert (service["status"], service["disabled_reason"]) == ("disabled", MASAKARI_DISABLED)
    assert api.host(ours)["on_maintenance"] is True
