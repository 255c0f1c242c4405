"""The outbox file deleted, replaced or turned to garbage under running daemons: nothing is
dropped, nothing hangs, and the operator is told (log, status). Real daemons, real CLI, the
real masakari-api."""
from __future__ import annotations

import json
import os

import pytest

from tests.helpers import cli, deliverer, wait_for, write_conf


@pytest.fixture
def conf(tmp_path, masakari_api, host):
    return write_conf(tmp_path / "monitors.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint=masakari_api.endpoint)


def notify(conf, name):
    r = cli(conf, "notify", "--type", "PROCESS", "--payload",
            json.dumps({"event": "STOPPED", "process_name": name}))
    assert r.returncode == 0, r.stderr
    return r


def stored_names(api, host):
    return sorted(n["payload"]["process_name"] for n in api.notifications(hostname=host))


def attempted(conf, name):
    out = cli(conf, "outbox", "list", "--state", "pending").stdout
    return any(name in line and "masakari:pending/" in line and "/0" not in line
               for line in out.splitlines())


@pytest.mark.parametrize("how", ["deleted", "replaced by garbage"])
def test_outbox_file_deleted_or_replaced_while_running(tmp_path, conf, masakari_api, host,
                                                       how):
    box = tmp_path / "state" / "outbox.sqlite"
    masakari_api.kill()
    try:
        with deliverer(conf) as d:
            notify(conf, "queued-before")
            wait_for(lambda: attempted(conf, "queued-before"), 20,
                     what="the daemon trying the row against the stopped API")
            for suffix in ("", "-wal", "-shm"):
                box.with_name(box.name + suffix).unlink(missing_ok=True)
            if how != "deleted":
                garbage = box.with_name("garbage")
                garbage.write_bytes(b"this is not an SQLite database\n" * 400)
                os.replace(garbage, box)
            # the operator's CLI, meanwhile: a fresh file (or it sets the garbage aside)
            notify(conf, "queued-after")
            wait_for(lambda: "while running: reopened" in d.log_text(), 20,
                     what="the daemon noticing the file change")
            r = cli(conf, "status", "--daemon", "delivery")
            assert r.returncode == 1, r.stdout  # WARNING: recovered, said loudly
            # deleted, then created anew by the CLI before the daemon's next look: "replaced"
            assert (f"outbox {box} was replaced while running: reopened" in r.stdout
                    or f"outbox {box} was deleted while running: reopened" in r.stdout)
            assert "1 pending notification(s) carried over" in r.stdout
            masakari_api.start()
            wait_for(lambda: stored_names(masakari_api, host) == ["queued-after",
                                                                   "queued-before"], 30,
                     what="both notifications at the API")
    finally:
        if not masakari_api.running:
            masakari_api.start()
    if how != "deleted":
        aside = [p.name for p in box.parent.iterdir() if ".corrupt-" in p.name]
        assert aside, "the garbage file is kept aside for a post-mortem"
    assert stored_names(masakari_api, host) == ["queued-after", "queued-before"]
    # the carried-over row and the new one POSTed once each
    assert sorted((p.payload["process_name"], p.status)
                  for p in masakari_api.posts(hostname=host)) == [("queued-after", 202),
                                                                  ("queued-before", 202)]


def test_garbage_outbox_at_start_is_moved_aside_and_the_daemon_gets_ready(
        tmp_path, conf, masakari_api, host):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "outbox.sqlite").write_bytes(os.urandom(16384))
    d = deliverer(conf)
    d.start()  # READY (it used to hang before READY)
    try:
        assert "moved aside to" in d.log_text()
        assert [p for p in state.iterdir() if p.name.startswith("outbox.sqlite.corrupt-")]
        r = cli(conf, "status", "--daemon", "delivery")
        assert r.returncode == 1 and "was not a readable database" in r.stdout, r.stdout
        notify(conf, "after-garbage")
        wait_for(lambda: stored_names(masakari_api, host) == ["after-garbage"], 20,
                 what="delivery through the fresh outbox")
    finally:
        d.stop()
        d.notify.close()
