"""The source kit's furniture: the atomic state file, /proc parsing, the Source base and
the entry-point registry."""
import os
import subprocess
import sys
import threading

import pytest

from monitors import procfs, process_verdicts, source, statefile


def test_statefile_round_trip_and_atomic_replace(tmp_path):
    path = str(tmp_path / "s.json")
    assert statefile.read(path) is None
    statefile.write(path, {"a": 1})
    statefile.write(path, {"a": 2, "b": [1]})
    assert statefile.read(path) == {"a": 2, "b": [1]}
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path)) == ["s.json"]  # no temporary file left behind


def test_statefile_names_the_file_when_unreadable(tmp_path):
    path = tmp_path / "s.json"
    path.write_text("{not json")
    with pytest.raises(statefile.StateFileError, match=str(path)):
        statefile.read(str(path))
    path.write_text("[1, 2]")
    with pytest.raises(statefile.StateFileError, match="not a JSON object"):
        statefile.read(str(path))


def test_padded_statefile_in_place_on_a_full_disk(tmp_path):
    """A real full tmpfs (needs mount rights: the suite runs as root)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        path = str(mnt / "status.json")
        statefile.write(path, {"state": "running"}, pad_block=4096)
        with open(mnt / "filler", "wb", buffering=0) as f:
            with pytest.raises(OSError):
                while True:
                    f.write(b"x" * 4096)
                    f.flush()
        with pytest.raises(OSError):
            statefile.write(str(mnt / "other.json"), {"x": 1})
        statefile.write(path, {"state": "degraded", "why": "disk full"}, pad_block=4096)
        assert statefile.read(path) == {"state": "degraded", "why": "disk full"}
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_procfs_tells_a_zombie_and_a_gone_process():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    assert procfs.ppid_state(child.pid)[0] == os.getpid()
    while procfs.ppid_state(child.pid)[1] != "Z":  # exited, not reaped
        pass
    assert procfs.argv(child.pid) is None  # a zombie has no command line
    child.wait()
    assert procfs.ppid_state(child.pid) is None
    assert procfs.pid_namespace() == os.stat("/proc/self/ns/pid").st_ino
    assert procfs.argv(os.getpid())[0] == sys.executable or "python" in procfs.argv(os.getpid())[0]


def test_procfs_reads_an_injected_root(tmp_path):
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_text("42 (a) b) S 7 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 "
                                          "12345 0 0\n")
    (tmp_path / "42" / "cmdline").write_bytes(b"/usr/bin/nova-compute\0--config\0")
    assert procfs.ppid_state(42, str(tmp_path)) == (7, "S")
    assert procfs.stat_fields(42, str(tmp_path))[19] == "12345"  # the start time
    assert procfs.argv(42, str(tmp_path)) == ["/usr/bin/nova-compute", "--config"]


def test_process_verdicts_round_trip(tmp_path):
    assert process_verdicts.read(str(tmp_path)) == {}
    process_verdicts.write(str(tmp_path), "nova-compute", process_verdicts.GAVE_UP, 12)
    process_verdicts.write(str(tmp_path), "libvirtd", process_verdicts.RUNNING)
    got = process_verdicts.read(str(tmp_path))
    assert got["nova-compute"]["verdict"] == "gave_up" and got["nova-compute"]["notification"] == 12
    assert got["libvirtd"]["verdict"] == "running"
    with pytest.raises(ValueError):
        process_verdicts.write(str(tmp_path), "x", "dead")


class _Ticker(source.Source):
    name = "ticker"

    def start(self):
        self.ticks = 0
        self.spawn(self._loop, "ticker")

    def _loop(self):
        while not self.sleep(0.01):
            self.ticks += 1

    def health(self):
        return source.Health(True, f"{self.ticks} ticks")


def test_source_base_owns_its_threads_and_stops_them():
    emitted = []
    s = _Ticker(conf=None, emit=emitted.append)
    s.start()
    assert s.emit is not None and s.threads()[0].is_alive()
    s.stop()
    assert not s.threads()[0].is_alive() and s.stopping


class _Stuck(source.Source):
    """Workers blocked in something that ignores the stop (a hung command, a read)."""
    name = "stuck"

    def start(self):
        self.release = threading.Event()
        for i in range(4):
            self.spawn(self.release.wait, f"stuck-{i}")


def test_stop_waits_one_deadline_for_all_threads_not_one_per_thread():
    import time

    s = _Stuck(conf=None, emit=None)
    s.start()
    t0 = time.monotonic()
    s.stop(timeout=0.5)
    took = time.monotonic() - t0
    s.release.set()
    # four stuck threads: 0.5 s in all (per thread it was 4 x 0.5 = 2 s)
    assert took < 1.5, f"stop took {took:.2f}s"


def test_registry_finds_each_daemons_sources_by_package():
    # Only the daemon's own package is imported; names are the entry points'.
    names = {ep.name: ep.value for ep in
             __import__("importlib.metadata").metadata.entry_points(group=source.NAMESPACE)}
    assert {"libvirt", "processes", "local", "pacemaker", "etcd"} <= set(names)
    for name, value in names.items():
        module = value.split(":")[0]
        assert module.split(".")[-1] == f"{name}_source", value  # one naming scheme
