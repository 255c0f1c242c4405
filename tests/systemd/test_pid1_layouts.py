"""Which cgroup layout tests/fixtures/systemd_pid1.py boots systemd in, and where in the
host's tree it writes, decided from the host's /proc/self/mountinfo and /proc/self/cgroup.
This machine is hybrid: the v2-only host's branch (Debian 12, Ubuntu 22.04+, RHEL 9) is
checked here on their real mountinfo lines; tests/systemd/test_live.py boots both layouts."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ci_skips import ci
from tests.fixtures import systemd_pid1 as sp1

ROOT = Path(__file__).resolve().parents[2]

# /proc/self/mountinfo lines as those hosts have them (Debian 12, Ubuntu 22.04: identical)
V2_ONLY = ("35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 "
           "cgroup2 rw,nsdelegate,memory_recursiveprot\n")
HYBRID = """25 20 0:23 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
27 25 0:25 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
28 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
"""
LEGACY = """25 20 0:23 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
27 25 0:25 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
"""
# a CI job run as a transient unit with Delegate=yes on a v2-only host
V2_CGROUP = "0::/system.slice/ci-job.service\n"
HYBRID_CGROUP = "9:name=systemd:/user.slice/s1.scope\n4:memory:/x\n0::/user.slice/s1.scope\n"


def test_v2_only_host_boots_unified_under_its_own_cgroup():
    assert sp1.host_layout(V2_ONLY) == "unified"
    assert sp1.layouts(V2_ONLY) == ["unified"]  # no name=systemd hierarchy to offer
    assert sp1.delegated_cgroups("unified", "sp1-1", "unified", V2_CGROUP) == [
        Path("/sys/fs/cgroup/system.slice/ci-job.service/sp1-1")]


def test_hybrid_host_offers_both_layouts_each_below_its_own_cgroups():
    assert sp1.host_layout(HYBRID) == "hybrid"
    assert sp1.layouts(HYBRID) == ["hybrid", "unified"]
    assert sp1.delegated_cgroups("hybrid", "sp1-1", "hybrid", HYBRID_CGROUP) == [
        Path("/sys/fs/cgroup/systemd/user.slice/s1.scope/sp1-1"),
        Path("/sys/fs/cgroup/unified/user.slice/s1.scope/sp1-1")]
    assert sp1.delegated_cgroups("unified", "sp1-1", "hybrid", HYBRID_CGROUP) == [
        Path("/sys/fs/cgroup/unified/user.slice/s1.scope/sp1-1")]


def test_legacy_only_host_offers_nothing_and_says_why():
    assert sp1.host_layout(LEGACY) is None and sp1.layouts(LEGACY) == []
    assert sp1.host_layout("") is None


def test_this_machine_offers_both():
    """The machine the suite runs on (hybrid here): both layouts are booted by test_live."""
    assert sp1.layouts() in (["hybrid", "unified"], ["unified"])
    assert sp1.missing() is None, sp1.missing()


_INNER = r"""
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from tests.fixtures import systemd_pid1 as sp1
assert sp1.host_layout() == "unified", sp1._mounts().get("/sys/fs/cgroup")
assert sp1.layouts() == ["unified"], sp1.layouts()
pid1 = sp1.Pid1(Path(sys.argv[1]))
pid1.start()
try:
    print("layout", pid1.layout)
    print("cgroups", *pid1.cgroups)
    print("active", pid1.systemctl("is-active", sp1.TARGET).stdout.strip())
    print("procs", pid1.cgroups[0].joinpath("init.scope/cgroup.procs").read_text().split())
finally:
    pid1.stop()
print("log", "Unified cgroup hierarchy is located at /sys/fs/cgroup." in pid1.log_tail(10**7))
"""


def test_fixture_on_a_v2_only_host_boots_unified_below_its_own_cgroup(tmp_path):
    """The fixture's v2-only host branch, run for real: a host whose /sys/fs/cgroup is
    cgroup2 alone is made here (a mount and cgroup namespace over a subtree of this host's
    cgroup2 tree, the test process moved into it), and the fixture, run there, detects it,
    makes its sub-cgroup below its own cgroup and boots systemd in unified mode."""
    why = sp1.missing(sp1.UNIFIED)
    if why:
        (pytest.fail if ci() else pytest.skip)(why)
    host = sp1.delegated_cgroups(sp1.UNIFIED, f"sp1-v2host-{os.getpid()}")[0]
    host.mkdir()
    try:
        r = subprocess.run(
            ["unshare", "--mount", "--cgroup", "--propagation", "private", "sh", "-c",
             'mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec "$@"', "sh",
             sys.executable, "-c", _INNER, str(tmp_path / "pid1"), str(ROOT)],
            capture_output=True, text=True, timeout=120,
            preexec_fn=lambda: host.joinpath("cgroup.procs").write_text(str(os.getpid())))
        assert r.returncode == 0, r.stdout + r.stderr
        out = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
        assert out["layout"] == "unified" and out["active"] == "active", r.stdout
        # seen from inside its cgroup namespace the sub-cgroup is right below /sys/fs/cgroup:
        # on the host it is host/sp1-..., nowhere else
        assert re.fullmatch(r"/sys/fs/cgroup/sp1-[\d-]+", out["cgroups"]), out
        assert out["log"] == "True", r.stdout
        assert out["procs"] != "[]", out  # systemd ran in <sub-cgroup>/init.scope
        assert [p.name for p in host.iterdir() if p.is_dir()] == [], "left behind"
    finally:
        sp1._remove_cgroup(host)
    assert not host.exists()
