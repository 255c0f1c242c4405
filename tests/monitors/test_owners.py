"""Owner locks (monitors/owners.py): an owner is alive iff its lock in <state_path>/owners
is held, which the kernel ends with the process, in whatever PID namespace either side
runs. Real processes, real kills, a real PID namespace."""
import os
import stat
import subprocess
import sys
import uuid

import pytest

from monitors import owners
from monitors.notification import VM, Notification
from monitors.outbox import Outbox
from tests.helpers import PID_NAMESPACE, wait_for

HOLD = ("import sys; from monitors import owners; print(owners.identity(sys.argv[1]), "
        "flush=True); {then}")


def holder(state, then="sys.stdin.read()", prefix=()):
    """A process that takes its owner lock in ``state``, prints its id, then ``then``."""
    proc = subprocess.Popen([*prefix, sys.executable, "-c", HOLD.format(then=then), str(state)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def test_alive_while_it_runs_dead_at_once_when_killed_even_unreaped(tmp_path):
    proc, owner = holder(tmp_path)
    try:
        assert owner.startswith(f"{proc.pid}-")
        assert (tmp_path / "owners" / f"{owner}.lock").exists()
        assert owners.alive(owner, str(tmp_path))
        assert owners.alive(owner, str(tmp_path))  # judging does not take the lock away
        proc.kill()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # a zombie, not reaped yet
        assert not owners.alive(owner, str(tmp_path))
        assert not (tmp_path / "owners" / f"{owner}.lock").exists()  # the reader removed it
        assert not owners.alive(owner, str(tmp_path))
    finally:
        proc.kill()
        proc.wait()


def test_judged_the_same_from_another_pid_namespace_both_ways(tmp_path):
    """The holder is pid 1 of its own PID namespace (pid 1 here is another process): we
    see it alive, it sees us alive; when it is killed we see it dead."""
    me = owners.identity(str(tmp_path))
    judge = "print(owners.alive(sys.stdin.readline().strip(), sys.argv[1]), flush=True); " \
            "sys.stdin.read()"
    proc, owner = holder(tmp_path, then=judge, prefix=PID_NAMESPACE)
    try:
        assert owner.startswith("1-")
        assert owners.alive(owner, str(tmp_path))
        proc.stdin.write(me + "\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "True"
    finally:
        proc.kill()  # unshare --kill-child: the namespace ends with it
        proc.wait()
    wait_for(lambda: not owners.alive(owner, str(tmp_path)), 10,
             what="the namespace's pid 1 gone")


def test_one_id_per_process_and_state_path_a_forked_child_gets_its_own(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    mine = owners.identity(str(a))
    assert owners.identity(str(a)) == mine and owners.identity(str(b)) != mine
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.write(w, owners.identity(str(a)).encode())
        finally:
            os._exit(0)
    os.close(w)
    child = os.read(r, 100).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert child != mine and child.startswith(f"{pid}-")
    assert not owners.alive(child, str(a)) and owners.alive(mine, str(a))


def test_a_forked_child_does_not_keep_its_dead_parent_alive(tmp_path):
    """The parent dies (no clean exit) while a child it forked after taking its lock
    lives on (a worker, a helper): the parent's lease is free."""
    script = ("import os, sys; from monitors import owners; "
              "me = owners.identity(sys.argv[1]); r, w = os.pipe(); pid = os.fork()\n"
              "if pid == 0: os.write(w, b'x'); sys.stdin.read(); os._exit(0)\n"
              "os.read(r, 1); print(me, pid, flush=True); os._exit(0)")  # child past fork
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    owner, child = proc.stdout.readline().split()
    proc.wait()
    try:
        assert os.path.exists(f"/proc/{child}")  # the child still runs
        assert not owners.alive(owner, str(tmp_path))
    finally:
        proc.stdin.close()  # the child reads EOF and exits


def test_legacy_and_malformed_owners(tmp_path):
    """pid:starttime (before owner locks) cannot be judged across namespaces: alive, its
    lease runs out on its own. Anything that is not an owner id is nobody."""
    assert owners.alive("1234:5678", str(tmp_path))
    for bad in ("", "garbage", "../../etc/passwd", "1-00"):
        assert not owners.alive(bad, str(tmp_path))
    assert not owners.alive("1-0123456789abcdef", str(tmp_path))  # no lock file: gone


def test_a_legacy_lease_is_respected_until_it_runs_out(tmp_path):
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    old = Outbox(box.path)
    old.owner = "4242:1"  # what an old version's process wrote
    box.put(Notification.create(VM, "h1", {"event": "LIFECYCLE", "instance_uuid": str(uuid.UUID(int=1)),
                                           "vir_domain_event": "STOPPED_FAILED"}),
            source="t", drivers=["masakari"])
    assert old.claim(["masakari"], 3600) is not None
    assert box.claim(["masakari"], 30) is None  # not taken early
    box._db.execute("UPDATE deliveries SET lease_until = 1")  # its lease ran out
    claim = box.claim(["masakari"], 30)
    assert claim is not None and claim.attempt == 2
    old.close()
    box.close()


def test_lock_files_of_the_dead_are_swept_by_the_next_owner(tmp_path):
    """A crash and a clean exit both leave the file (a thread may POST until the very
    end: the lease holds until the kernel ends the process); the next owner's sweep
    removes the files of owners gone, never a live one's."""
    gone = []
    for then in ("import os; os._exit(0)", "sys.exit(0)"):
        proc, owner = holder(tmp_path, then=then)
        proc.wait()
        gone.append(owner)
    live, owner = holder(tmp_path)  # its sweep
    try:
        assert os.listdir(tmp_path / "owners") == [f"{owner}.lock"]
        assert not any(owners.alive(o, str(tmp_path)) for o in gone)
    finally:
        live.kill()
        live.wait()


def test_the_owners_directory_follows_the_state_directorys_group_mode(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o2770)  # what [DEFAULT] state_group makes
    owner = owners.identity(str(state))
    assert stat.S_IMODE(os.stat(state / "owners").st_mode) == 0o2770
    assert stat.S_IMODE(os.stat(state / "owners" / f"{owner}.lock").st_mode) == 0o640
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    owner = owners.identity(str(private))
    assert stat.S_IMODE(os.stat(private / "owners").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(private / "owners" / f"{owner}.lock").st_mode) == 0o600


def test_a_state_path_that_cannot_hold_the_lock_is_named(tmp_path):
    with pytest.raises(owners.OwnerLockError, match=f"{tmp_path}/missing/owners"):
        owners.identity(str(tmp_path / "missing"))
