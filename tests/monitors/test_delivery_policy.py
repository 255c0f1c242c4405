"""The delivery policy is the worker's (monitors.delivery), the outbox only stores it: what
each answer makes of a row, how long until it is asked again, when it expires, and the
gate that an unreachable recipient closes. Driven through a real outbox and a driver that
answers what the test says (the answers' own classes are shown against the real
masakari-api in test_delivery and test_answers)."""
import time

import pytest

from monitors.delivery import DeliveryWorker
from monitors.drivers import Answer, Driver
from monitors.history import ReadModel
from monitors.outbox import Outbox
from monitors.states import Outcome, State
from tests.monitors.test_delivery import make_conf, vm


class Scripted(Driver):
    """Answers with the queued Answers, in order."""
    name = "masakari"

    def __init__(self, conf, answers):
        super().__init__(conf)
        self.answers = list(answers)

    def send(self, notification):
        return self.answers.pop(0)


@pytest.fixture
def box(tmp_path):
    b = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    yield b
    b.close()


def worker(tmp_path, box, answers, **delivery):
    conf = make_conf(tmp_path, "http://127.0.0.1:9/v1", **delivery)
    return DeliveryWorker(conf, box, {"masakari": Scripted(conf, answers)})


def deliveries(box, nid):
    return box._read("SELECT state, next_attempt_at, last_status FROM deliveries "
                      "WHERE notification_id = ?", (nid,))[0]


@pytest.mark.parametrize("answer,state", [
    (Answer(Outcome.DELIVERED, 202, "u"), State.DELIVERED),
    (Answer(Outcome.DUPLICATE, 409), State.DELIVERED),
    (Answer(Outcome.REJECTED, 400), State.REJECTED),
    (Answer(Outcome.RETRY, 503), State.PENDING),
    (Answer(Outcome.AUTH, 401), State.PENDING),
    (Answer(Outcome.HELD, 409, None, "held: host on maintenance"), State.PENDING),
])
def test_each_answer_is_stored_as_the_worker_decided(tmp_path, box, answer, state):
    nid = box.put(vm("h"), source="t", drivers=["masakari"]).id
    assert worker(tmp_path, box, [answer]).run_once()
    row = deliveries(box, nid)
    assert row["state"] == state and ReadModel(box).get(nid)["state"] == state
    assert row["last_status"] == answer.status


def test_retry_and_held_wait_their_capped_backoff(tmp_path, box):
    w = worker(tmp_path, box, [Answer(Outcome.RETRY, 503),
                               Answer(Outcome.HELD, 409, None, "held: x")],
               retry_initial_interval=10, retry_max_interval=20, held_retry_interval=15)
    a = box.put(vm("a"), source="t", drivers=["masakari"]).id
    b = box.put(vm("b"), source="t", drivers=["masakari"]).id
    before = time.time()
    w.run_once(a)
    w.run_once(b)
    # attempt 1: 10 s, jittered into [5, 10]
    assert 5 <= deliveries(box, a)["next_attempt_at"] - before <= 10.5
    assert 5 <= deliveries(box, b)["next_attempt_at"] - before <= 10.5
    assert not w.run_once()  # neither is due yet


def test_max_age_expires_a_row_that_is_still_not_delivered(tmp_path, box):
    nid = box.put(vm("h"), source="t", drivers=["masakari"]).id
    box._db.execute("UPDATE notifications SET created_boot = created_boot - 100")
    w = worker(tmp_path, box, [Answer(Outcome.HELD, 409, None, "held: x")], max_age=60)
    w.run_once()
    assert ReadModel(box).get(nid)["state"] == State.EXPIRED
    # an answer that delivers it is never turned into expired, however old the row
    other = box.put(vm("i"), source="t", drivers=["masakari"]).id
    box._db.execute("UPDATE notifications SET created_boot = created_boot - 100")
    worker(tmp_path, box, [Answer(Outcome.DELIVERED, 202, "u")], max_age=60).run_once()
    assert ReadModel(box).get(other)["state"] == State.DELIVERED


def test_an_unreachable_recipient_closes_the_gate_and_its_rows_are_due_with_it(tmp_path, box):
    from monitors.notification import COMPUTE_HOST, Notification

    w = worker(tmp_path, box, [Answer(Outcome.RETRY, None, None, "ConnectFailure"),
                               Answer(Outcome.DELIVERED, 202, "u1"),
                               Answer(Outcome.DELIVERED, 202, "u2")],
               retry_initial_interval=1, retry_max_interval=2)
    vm_row = box.put(vm("h"), source="t", drivers=["masakari"]).id
    host = box.put(Notification.create(COMPUTE_HOST, "h", {
        "event": "STOPPED", "host_status": "NORMAL", "cluster_status": "OFFLINE"}),
        source="t", drivers=["masakari"]).id
    assert w.run_once()  # the host fault probes, and finds the recipient unreachable
    assert w.open_drivers() == []  # closed: the backlog is not hammered
    assert not w.run_once()
    # the probe is due at once, held back by the closed gate alone: no retry time of its
    # own can let the VM fault overtake it the moment the gate reopens
    assert deliveries(box, host)["next_attempt_at"] <= time.time()
    reopens = w.gate_reopens_at()
    retry_in = [h for h in ReadModel(box).get(host)["history"] if h["kind"] == "answer"][0]["retry_in"]
    assert abs(time.time() + retry_in - reopens) < 0.3  # the history says when it reopens
    time.sleep(max(reopens - time.time(), 0) + 0.05)
    assert w.open_drivers() == ["masakari"]
    assert w.drain()  # answer and next claim in one transaction each
    answers = sorted((h["at"], nid) for nid in (vm_row, host) for h in ReadModel(box).get(nid)["history"]
                     if h["kind"] == "answer" and h["state"] == "delivered")
    assert [nid for _, nid in answers] == [host, vm_row]


def test_a_driver_answering_nonsense_is_retried_not_crashed(tmp_path, box):
    nid = box.put(vm("h"), source="t", drivers=["masakari"]).id
    worker(tmp_path, box, [Answer("ok", 200)]).run_once()
    row = ReadModel(box).get(nid)
    assert row["state"] == State.PENDING
    assert "unknown outcome 'ok'" in row["deliveries"][0]["last_message"]
