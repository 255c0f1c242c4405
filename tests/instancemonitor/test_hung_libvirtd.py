"""libvirtd alive but not answering (SIGSTOPped: its socket accepts, nothing answers, no
EOF ever comes), against a real libvirtd (test driver), the real masakari-api and a real
private journald: keepalive closes the connection, ``ha-monitors status`` and the journal
say "libvirtd hung", and once libvirtd answers again (continued, or killed and restarted
as processmonitor would) the daemon reconnects and reconciles: what happened to the
domains meanwhile reaches the API exactly once, counted by POSTs."""
from __future__ import annotations

import collections
import os
import signal
import threading
import time

from tests.fixtures.journald import journald  # noqa: F401 - the fixture
from tests.helpers import cli, wait_for
from tests.instancemonitor.conftest import outbox_rows, vm_events, vm_sent

JOURNAL = {"DEFAULT": {"use_journal": "true"}}


def _signal(libvirtd, signo):
    os.killpg(libvirtd.proc.pid, signo)


def _status(daemon, text):
    return wait_for(lambda: (lambda r: r if text in r.stdout else None)(
        cli(daemon.conf, "status")), 20, interval=0.2, what=f"status saying {text!r}")


def _journal(journald, text, **fields):  # noqa: F811
    """The daemon's journal entries with ``fields`` whose MESSAGE contains ``text``."""
    ours = {"SYSLOG_IDENTIFIER": "ha-instancemonitor"}
    try:
        return wait_for(lambda: [e for e in journald.query(**ours, **fields)
                                 if text in e["MESSAGE"]],
                        20, interval=0.2, what=f"journal entry {fields} {text!r}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the journal has:\n"
                             + journald.messages(**ours)[-3000:]) from None


def _stored(api, host, n):
    return wait_for(lambda: (lambda ev: ev if len(ev) >= n else None)(vm_events(api, host)),
                    20, what=f"{n} VM notifications stored by the API")


def test_sigstopped_libvirtd_is_hung_then_continued(journald, libvirtd,  # noqa: F811
                                                     make_daemon, masakari_api, host):
    """A domain destroyed while libvirtd is stopped (the request waits in its socket) is
    reported once after SIGCONT: by the reconcile, or live if the new connection's
    callbacks were registered first; never both, never neither."""
    doomed, alive = libvirtd.create("inst-doomed"), libvirtd.create("inst-alive")
    daemon = make_daemon(host, start=False, sections=JOURNAL)
    daemon.argv_prefix = journald.prefix()
    daemon.start()
    _journal(journald, "reconciled ")

    _signal(libvirtd, signal.SIGSTOP)
    destroyer = None
    try:
        hung = _journal(journald, "libvirtd hung", LIBVIRT_STATE="hung")
        assert len(hung) == 1 and hung[0]["PRIORITY"] == "3", hung  # ERROR, once
        assert "keepalive" in hung[0]["MESSAGE"], hung[0]["MESSAGE"]
        status = _status(daemon, "libvirtd hung for")
        assert status.returncode == 2, status.stdout  # CRITICAL: nothing is watched
        assert "source libvirt: " in status.stdout
        # destroyed during the freeze: the call waits until libvirtd runs again
        destroyer = threading.Thread(target=doomed.destroy)
        destroyer.start()
        time.sleep(0.5)
        assert vm_sent(masakari_api, host) == []
    finally:
        _signal(libvirtd, signal.SIGCONT)
        if destroyer:
            destroyer.join(10)

    answering = _journal(journald, "answers again", LIBVIRT_STATE="answering")
    assert "reconnected" in answering[0]["MESSAGE"]
    _stored(masakari_api, host, 1)
    wait_for(lambda: all(r["state"] == "delivered" for r in outbox_rows(daemon.conf.parent
                                                                        / "state")),
             10, what="outbox delivered")
    time.sleep(0.5)  # a second report, had there been one, is delivered by now
    assert collections.Counter(vm_sent(masakari_api, host)) == collections.Counter(
        [("LIFECYCLE", doomed.UUIDString(), "STOPPED_DESTROYED", 202)])
    (row,) = outbox_rows(daemon.conf.parent / "state")
    if row["decision"].get("reconciled"):
        assert row["decision"]["unobserved"].startswith("libvirtd hung "), row["decision"]
    status = _status(daemon, "last libvirtd hang")
    assert status.returncode == 0, status.stdout
    # the live connection works: an event after the hang is reported live
    alive.destroy()
    assert _stored(masakari_api, host, 2)[-1] == ("LIFECYCLE", alive.UUIDString(),
                                                  "STOPPED_DESTROYED")


def test_sigstopped_libvirtd_killed_and_restarted(libvirtd, make_daemon, masakari_api,
                                                 host, tmp_path):
    """The hung libvirtd is killed and started again (what processmonitor's restart of
    libvirtd does): the domains it ran are gone; the reconcile reports each once, its
    decision saying they went unobserved because libvirtd hung, and `ha-monitors history`
    shows it."""
    a, b = libvirtd.create("inst-a"), libvirtd.create("inst-b")
    daemon = make_daemon(host)
    wait_for(lambda: "reconciled " in daemon.log_text(), 10, what="first reconcile")

    _signal(libvirtd, signal.SIGSTOP)
    try:
        wait_for(lambda: "libvirtd hung: no answer to 2 keepalive(s)" in daemon.log_text(),
                 20, what="the hang in the log")
        _status(daemon, "libvirtd hung for")
    finally:
        libvirtd.kill()  # SIGKILL ends a stopped process too
    libvirtd.start()
    libvirtd.hold()
    wait_for(lambda: "answers again" in daemon.log_text(), 15, what="answering again")
    _stored(masakari_api, host, 2)
    wait_for(lambda: all(r["state"] == "delivered" for r in outbox_rows(tmp_path / "state")),
             10, what="outbox delivered")
    time.sleep(0.5)
    assert collections.Counter(vm_sent(masakari_api, host)) == collections.Counter(
        [("LIFECYCLE", a.UUIDString(), "STOPPED_FAILED", 202),
         ("LIFECYCLE", b.UUIDString(), "STOPPED_FAILED", 202)])
    for row in outbox_rows(tmp_path / "state"):
        assert row["decision"]["reconciled"] is True
        assert row["decision"]["now"] == "vanished"
        assert row["decision"]["unobserved"].startswith("libvirtd hung "), row["decision"]
        assert row["decision"]["unobserved"].endswith(", then unreachable"), row["decision"]
    history = cli(daemon.conf, "history")
    assert "unobserved=libvirtd hung " in history.stdout, history.stdout
    assert "libvirtd answers again" in daemon.log_text()
    assert daemon.proc.poll() is None
