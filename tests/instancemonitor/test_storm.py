"""An event storm: 500 domains destroyed at once on a real libvirtd; every notification
reaches the real API, with a bounded number of threads (no thread per event).

masakari-api needs ~45 ms per POST once many notifications exist for one host (its
duplicate check rescans them), so the API alone needs ~25 s for this storm."""
from __future__ import annotations

import time

import psutil
import pytest

from tests.helpers import wait_for
from tests.instancemonitor.conftest import outbox_rows

N = 500


@pytest.mark.slow
def test_storm_of_500_domains_all_delivered(libvirtd, make_daemon, masakari_api, host,
                                            tmp_path):
    doms = [libvirtd.create(f"storm-{i:04d}") for i in range(N)]
    daemon = make_daemon(host, sections={"delivery": {"workers": 2}})
    proc = psutil.Process(daemon.proc.pid)
    t0 = time.monotonic()
    for dom in doms:
        dom.destroy()
    threads = [proc.num_threads()]
    recorded = wait_for(lambda: (threads.append(proc.num_threads()),
                                 len(outbox_rows(tmp_path / "state")) >= N)[1],
                        20, interval=0.2, what=f"{N} notifications recorded in the outbox")
    t_recorded = time.monotonic() - t0
    assert recorded

    def delivered():
        threads.append(proc.num_threads())
        return len(masakari_api.notifications(type="VM", hostname=host)) >= N
    wait_for(delivered, 120, interval=1.0, what=f"{N} notifications stored by the API")
    stored = masakari_api.notifications(type="VM", hostname=host)
    assert {n["payload"]["instance_uuid"] for n in stored} == {d.UUIDString() for d in doms}
    assert all(n["payload"]["vir_domain_event"] == "STOPPED_DESTROYED" for n in stored)
    assert max(threads) < 30, threads  # masakari-monitors peaks near one thread per event
    print(f"storm: {N} recorded in {t_recorded:.2f}s, stored in "
          f"{time.monotonic() - t0:.1f}s, max threads {max(threads)}")
