"""`journalctl PROCESS_NAME=nova-compute` answers "what happened to this service":
ha-processmonitor runs under a real private journald (tests/fixtures/journald.py); a
watched stand-in is killed, its restart command fails, STOPPED is delivered to the real
masakari-api, and the journal tells detection, decision, failed restart and delivery —
all under the name the notification carries, not the process list's match string."""
from __future__ import annotations

import signal

from tests.fixtures.journald import journald  # noqa: F401 - the fixture
from tests.processmonitor.conftest import fail, stamps, wait_notification

NOVA = "fake-nova-compute"


def test_killed_process_story_in_the_journal(journald, pm, standins, masakari_api,  # noqa: F811
                                             host, tmp_path):
    log = tmp_path / "stamps"
    standins.start(NOVA)
    pm([{"process_name": standins.name(NOVA), "notify_name": "nova-compute",
         "restart_command": fail(log, "nova")}],
       sections={"DEFAULT": {"use_journal": "true"}}, argv_prefix=journald.prefix())
    killed = standins.kill(NOVA, sig=signal.SIGKILL)
    stored = wait_notification(masakari_api, host, "STOPPED")
    assert len(stamps(log, "fail")) == 1

    entries = journald.wait_delivered(PROCESS_NAME="nova-compute")
    story = [(e.get("DECISION") or e.get("COMMAND") or e.get("DELIVERY_STATE")) for e in entries]
    assert story == ["restart", "restart_command", "pending", "delivered"], \
        journald.messages(PROCESS_NAME="nova-compute")
    noticed, failed, detected, delivered = entries
    assert noticed["PID"] == str(killed[0]) and noticed["DETECTED_BY"]
    assert noticed["PRIORITY"] == "4"  # warning
    assert failed["PRIORITY"] == "3" and "cannot restart nova" in failed["MESSAGE"]
    assert detected["NOTIFICATION_TYPE"] == "PROCESS" and detected["EVENT"] == "STOPPED"
    assert detected["NOTIFICATION_ID"] == delivered["NOTIFICATION_ID"]
    assert detected["HOSTNAME"] == host
    assert stored[0]["notification_uuid"] in delivered["MESSAGE"]
    assert {e["SYSLOG_IDENTIFIER"] for e in entries} == {"ha-processmonitor"}
