"""The hang episode's rules (instancemonitor/hang.py), pure: what status and the
reconcile's decision say, and that one episode is logged once however many bounds see it
(keepalive's close and the connect's timer both fire on a libvirtd hung at a reconnect)."""
from __future__ import annotations

import logging

from instancemonitor.hang import Hang


def test_one_episode_logged_once_and_ended_by_the_next_answer(caplog):
    hang = Hang("test+unix:///default")
    assert not hang.hung and hang.describe() == "" and hang.end("reconnected") is None
    with caplog.at_level(logging.WARNING, logger="instancemonitor.hang"):
        assert hang.begin("no answer to 3 keepalive(s) sent 5s apart", 15.0)
        assert not hang.begin("the connection not answered within 15s", 15.0)
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert caplog.records[0].journal_fields == {"LIBVIRT_STATE": "hung"}
    assert hang.hung and hang.describe().startswith("libvirtd hung for 15s (no answer to 3")
    unobserved = hang.end("reconnected")
    assert unobserved == "libvirtd hung 15s (no answer to 3 keepalive(s) sent 5s apart)"
    assert not hang.hung and hang.end("reconnected") is None
    assert hang.describe().startswith("last libvirtd hang 15s, ended ")
    assert hang.describe().endswith("(1 since start)")
    assert caplog.records[-1].journal_fields == {"LIBVIRT_STATE": "answering"}
    assert hang.begin("again", 15.0) and hang.episodes == 2
