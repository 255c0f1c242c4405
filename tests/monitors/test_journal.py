"""Journal fields, asserted through a real private journald (no journald runs on the test
machine, so one is started in a private mount namespace) and queried by
field the way an operator does: journalctl INSTANCE_UUID=..."""
import json
import shutil
import subprocess
import sys
import textwrap
import uuid

import pytest

from monitors.notification import VM, Notification
from monitors.outbox import Outbox
from tests.helpers import write_conf

JOURNALD = "/lib/systemd/systemd-journald"


@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare missing")
def test_delivery_lines_carry_journal_fields(tmp_path, masakari_api, host):
    instance = str(uuid.uuid4())
    conf = write_conf(tmp_path / "m.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint=masakari_api.endpoint,
                      sections={"DEFAULT": {"use_journal": "true"}})
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite"))
    nid = box.put(Notification.create(VM, host, {"event": "LIFECYCLE", "instance_uuid": instance,
                                                 "vir_domain_event": "STOPPED_FAILED"}),
                  source="test", drivers=["masakari"]).id
    (tmp_path / "log").mkdir()
    script = tmp_path / "in-namespace.sh"
    script.write_text(textwrap.dedent(f"""\
        set -e
        mount -t tmpfs tmpfs /run/systemd
        mkdir -p /run/systemd/journal
        mount --bind {tmp_path}/log /run/log
        {JOURNALD} & J=$!
        for i in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
        {sys.executable} -c '
        import subprocess, sys, time
        from monitors.outbox import Outbox
        d = subprocess.Popen(["{sys.prefix}/bin/ha-monitors", "--config-file", "{conf}", "deliver"])
        box = Outbox("{box.path}")
        deadline = time.time() + 30
        while box.get({nid})["state"] != "delivered" and time.time() < deadline:
            time.sleep(0.05)
        d.terminate(); d.wait(20)
        '
        sleep 0.5
        journalctl --directory=/run/log/journal INSTANCE_UUID={instance} -o json > {tmp_path}/out.json
        kill $J
        """))
    r = subprocess.run(["unshare", "-m", "bash", str(script)], capture_output=True, text=True,
                       timeout=90)
    assert r.returncode == 0, r.stderr[-2000:]
    entries = [json.loads(line) for line in (tmp_path / "out.json").read_text().splitlines()]
    delivered = [e for e in entries if e.get("DELIVERY_STATE") == "delivered"]
    assert delivered, entries
    e = delivered[0]
    assert e["NOTIFICATION_ID"] == str(nid)
    assert e["NOTIFICATION_TYPE"] == "VM" and e["HOSTNAME"] == host
    assert e["EVENT"] == "LIFECYCLE" and e["SYSLOG_IDENTIFIER"] == "ha-delivery"
    stored = masakari_api.notifications(hostname=host)
    assert stored[0]["notification_uuid"] in e["MESSAGE"]
