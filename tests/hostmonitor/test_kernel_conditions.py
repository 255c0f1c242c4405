"""The kernel conditions are changed by the kmsg thread (a finding holds, a repeat is
counted, an idle wait expires) and by the evaluation and status threads (storage(),
health() and status() expire and read them). Real threads on one KernelWatcher, with its
real state file: no thread sees "dictionary changed size during iteration" or a
condition deleted under it, every file written is one moment's conditions, and the last
one written holds what the watcher holds (a restart then forgets nothing)."""
from __future__ import annotations

import json
import sys
import threading

from hostmonitor import kmsg
from hostmonitor.kernel import KernelWatcher
from monitors import statefile

from tests.hostmonitor.test_kernel import _conf

WRITERS, FINDINGS = 4, 60


def test_threads_changing_and_reading_conditions_save_consistent_snapshots(tmp_path):
    rules = tmp_path / "kernel.yaml"
    rules.write_text("mode: replace\nrules:\n"
                     # held (600 s): what the snapshots are checked against
                     "  - {name: held, match: '^HELD (?P<iface>\\S+)', finding: nic_reset}\n"
                     # over at once: expired by whichever thread looks first
                     "  - {name: blip, match: '^BLIP (?P<iface>\\S+)', finding: nic_reset, "
                     "hold: 0.001}\n")
    conf = _conf(tmp_path, hardware_check_interval=0, kernel_rules_file=str(rules))
    conf.set_override("state_path", str(tmp_path))
    w = KernelWatcher(conf, lambda: None)
    path = tmp_path / "hostmonitor-kernel.json"
    errors: list[str] = []
    done = threading.Event()

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(f"{threading.current_thread().name}: {exc!r}")
        return run

    def writer(t):
        for i in range(FINDINGS):
            seq = t * 10000 + i
            w.handle(kmsg.Record(seq, 4, 0, seq, f"HELD w{t}-{i}"))
            w.handle(kmsg.Record(seq, 4, 0, seq, f"HELD w{t}-{i}"))  # a repeat: counted
            w.handle(kmsg.Record(seq, 4, 0, seq, f"BLIP b{t}-{i}"))

    def evaluator():
        while not done.is_set():
            w.storage()
            w.health()
            w.status()
            w.expire()

    snapshots = []

    def reader():
        while not done.is_set():
            doc = statefile.read(str(path))
            if doc is not None:
                snapshots.append(doc)

    threads = [threading.Thread(target=guarded(lambda t=t: writer(t)), name=f"writer-{t}")
               for t in range(WRITERS)]
    threads += [threading.Thread(target=guarded(evaluator), name=f"evaluator-{n}")
                for n in range(3)]
    threads.append(threading.Thread(target=guarded(reader), name="reader"))
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        for th in threads:
            th.start()
        for th in threads[:WRITERS]:
            th.join()
        done.set()
        for th in threads[WRITERS:]:
            th.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []

    held = {f"w{t}-{i}" for t in range(WRITERS) for i in range(FINDINGS)}
    w.expire()  # the last blips are over
    assert {c.subject for c in w.conditions.values()} == held
    # the file holds what the watcher holds, each held finding once with both records
    doc = json.loads(path.read_text())
    assert doc["boot_id"] == w.reader.boot
    saved = [c for c in doc["conditions"] if c["rule"].endswith(":3")]
    assert sorted(c["subject"] for c in saved) == sorted(held)
    assert {c["count"] for c in saved} == {2}
    # every file written was one moment: a writer's findings come in order, so a file
    # holding its i-th held finding holds all its earlier ones, each once
    assert snapshots, "the reader saw no file"
    for snap in snapshots:
        subjects = [c["subject"] for c in snap["conditions"] if c["rule"].endswith(":3")]
        assert len(subjects) == len(set(subjects)), "a condition saved twice"
        for t in range(WRITERS):
            mine = sorted(int(s.split("-")[1]) for s in subjects if s.startswith(f"w{t}-"))
            assert mine == list(range(len(mine))), f"writer {t}: {mine} is no moment's state"
    # and a restart reads them all back
    again = KernelWatcher(conf, lambda: None)
    again._load_conditions()
    assert {c.subject for c in again.conditions.values()} == held
