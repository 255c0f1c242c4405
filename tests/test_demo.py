"""`make demo` as an operator runs it: `python -m demo` brings up the real components, injects
the failures (one of them kernel-level: a real OOM kill of a qemu process), prints what
the real masakari-api stored and what the real masakari-engine did (Nova calls, from the
recording Nova stand-in), and leaves nothing behind."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.masakari_api import available

ROOT = Path(__file__).resolve().parents[1]
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def live_cmdlines() -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    found.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return found


@pytest.mark.slow
def test_demo_shows_every_notification_as_the_api_stored_it_and_cleans_up():
    if not available():
        pytest.fail("masakari-api is not installed (set MASAKARI_VENV)")
    run = subprocess.run([sys.executable, "-m", "demo"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr

    api_part = out.split("as masakari-api stored them")[1].split("What masakari-engine did")[0]
    rows = re.findall(rf"^\s+(VM|PROCESS|COMPUTE_HOST)\s+(\S+)\s+(\{{.*\}})\s+(\w+)\s+({UUID})$",
                      api_part, re.M)
    got = {(t, host, payload, status) for t, host, payload, status, _ in rows}
    assert got == {
        ("COMPUTE_HOST", "compute-1",
         '{"cluster_status":"OFFLINE","event":"STOPPED","host_status":"UNKNOWN"}', "ignored"),
        ("VM", "compute-1", re.search(r'\{"event":"LIFECYCLE","instance_uuid":"' + UUID +
                                      r'","vir_domain_event":"STOPPED_DESTROYED"\}',
                                      api_part)[0], "ignored"),
        ("VM", "compute-1", re.search(r'\{"event":"LIFECYCLE","instance_uuid":"' + UUID +
                                      r'","vir_domain_event":"STOPPED_FAILED"\}',
                                      api_part)[0], "finished"),
        ("PROCESS", "compute-1", '{"event":"STOPPED","process_name":"nova-compute"}',
         "finished"),
        # only the peer path, with fencing confirmed, says NORMAL: and only then evacuation
        ("COMPUTE_HOST", "compute-2",
         '{"cluster_status":"OFFLINE","event":"STOPPED","host_status":"NORMAL"}', "finished"),
    }, api_part
    engine_part = out.split("What masakari-engine did")[1].split("ha-monitors history")[0]
    did = re.findall(r"^\s+(VM|PROCESS|COMPUTE_HOST)\s+(\S+)\s+(\S+)\s+(.+?)\s{2,}(\S.*)$",
                     engine_part, re.M)
    assert [(t, h, e, st.strip(), n) for t, h, e, st, n in did] == [
        ("COMPUTE_HOST", "compute-1", "STOPPED/UNKNOWN", "ignored", "no Nova call"),
        ("VM", "compute-1", "LIFECYCLE/STOPPED_DESTROYED", "ignored", "no Nova call"),
        ("VM", "compute-1", "LIFECYCLE/STOPPED_FAILED", "finished", "1 instance restarted"),
        ("PROCESS", "compute-1", "STOPPED/nova-compute", "finished",
         "compute service disabled ('Masakari detected process failed.')"),
        ("PROCESS", "compute-1", "STARTED/nova-compute", "held (409, maintenance)",
         "no Nova call"),
        ("COMPUTE_HOST", "compute-2", "STOPPED/NORMAL", "finished",
         "compute service disabled ('Masakari detected host failed.'), 2 instances evacuated"),
    ], engine_part
    assert "verdict withheld for safety" in engine_part
    history = out.split("ha-monitors history")[1]
    for *_, uuid in rows:  # the node's record carries the API's answer for each one
        assert uuid in history, history

    # Nothing left behind: namespaces, work dir, daemons, libvirtd, the API, the stand-in.
    names = re.search(r"compute node = netns (\S+), cloud = netns (\S+);", out).groups()
    work = re.search(r"work dir (\S+)\)", out)[1]
    tag = re.search(r"process_name 'fake-nova-compute (\S+)'", out)[1]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [n for n in names if re.search(rf"^{n}\b", netns, re.M)], netns
    assert not Path(work).exists()
    assert not [c for c in live_cmdlines() if work in c or tag in c]
