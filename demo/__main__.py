"""make demo: start a real masakari-api on loopback, hand a host failure to the core the
way a detector does, deliver it, and show it as the API stored it and as the outbox
recorded it. Everything it starts is stopped at the end; nothing outside a temp dir is
touched."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.masakari_api import MasakariAPI  # noqa: E402
from tests.helpers import write_conf  # noqa: E402

BIN = Path(sys.executable).parent


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(*args: str) -> subprocess.CompletedProcess:
    print("$ " + " ".join(Path(args[0]).name if i == 0 else a for i, a in enumerate(args)),
          flush=True)
    r = subprocess.run(args, capture_output=True, text=True)
    sys.stdout.write(r.stdout)
    if r.returncode not in (0,):
        sys.stdout.write(r.stderr)
    return r


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="ha-monitors-demo-"))
    hostname = socket.gethostname().split(".")[0] or "compute-1"
    step(f"starting a real masakari-api (noauth2, SQLite) in {work}")
    api = MasakariAPI(work / "masakari").start()
    try:
        api.ensure_host(hostname)
        print(f"masakari-api at {api.endpoint}; host {hostname!r} registered in a segment")
        conf = write_conf(work / "monitors.conf", hostname=hostname,
                          state_path=work / "state", endpoint=api.endpoint)
        plist = work / "process_list.yaml"
        plist.write_text("- process_name: /usr/sbin/libvirtd\n"
                         "  restart_command: systemctl restart libvirtd\n")
        conf.write_text(conf.read_text().replace("debug = true", "debug = false")
                        + f"[process]\nprocess_list_path = {plist}\n")
        step("configuration (masakari-monitors' [api] options: auth_type none + endpoint)")
        print(conf.read_text())
        run(str(BIN / "ha-monitors"), "--config-file", str(conf), "check-config")

        step("a detector hands a host failure over: durable in the outbox first, then delivered")
        run(str(BIN / "ha-monitors"), "--config-file", str(conf), "notify",
            "--type", "COMPUTE_HOST", "--payload",
            '{"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "NORMAL"}',
            "--wait")

        step("an invalid notification is refused before it is stored, naming the field")
        run(str(BIN / "ha-monitors"), "--config-file", str(conf), "notify", "--type", "VM",
            "--payload", '{"event": "LIFECYCLE", "instance_uuid": "not-a-uuid", '
                         '"vir_domain_event": "STOPPED_FAILED"}')

        step("the API is down: the failure stays in the outbox (nothing lost)")
        api.kill()
        run(str(BIN / "ha-monitors"), "--config-file", str(conf), "notify", "--type", "PROCESS",
            "--payload", '{"event": "STOPPED", "process_name": "nova-compute"}',
            "--wait", "--timeout", "2")
        step("the API is back: the delivery worker drains the outbox")
        api.start()
        deliver = subprocess.Popen([str(BIN / "ha-monitors"), "--config-file", str(conf),
                                    "deliver"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            import time
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(api.notifications(hostname=hostname)) < 2:
                time.sleep(0.1)
        finally:
            deliver.terminate()
            deliver.wait(15)

        step("what the outbox recorded (ha-monitors outbox list / show)")
        run(str(BIN / "ha-monitors"), "--config-file", str(conf), "outbox", "list")
        run(str(BIN / "ha-monitors"), "--config-file", str(conf), "outbox", "show", "2")

        step("what the API stored (GET /v1/notifications)")
        stored = api.notifications(hostname=hostname)
        for n in stored:
            print(json.dumps({k: n[k] for k in ("notification_uuid", "type", "generated_time",
                                                "payload", "status")}, sort_keys=True))
        ok = len(stored) == 2
        print(f"\n{'OK' if ok else 'FAILED'}: {len(stored)} notification(s) stored by masakari-api")
        return 0 if ok else 1
    finally:
        api.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
