"""Configuration compatibility: every option of masakari-monitors 22.0.0's generated sample
(tests/monitors/data, produced by its own oslo-config-generator) is known to us, so an
operator's existing masakarimonitors.conf works as it is; and our sample generates."""
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import cli

DATA = Path(__file__).parent / "data"
BIN = Path(sys.executable).parent


def uncommented_sample(tmp_path) -> Path:
    """The incumbent's sample with every option set to a value of its type."""
    values = {"<None>": None, "<HOSTNAME>": "compute-1"}
    lines = []
    for line in (DATA / "masakarimonitors.conf.sample").read_text().splitlines():
        m = re.match(r"^#([a-z_]+) = (.*)$", line)
        if not m:
            lines.append(line)
            continue
        name, value = m.groups()
        value = values.get(value, value)
        if value is None:
            continue  # no default: leave unset
        lines.append(f"{name} = {value}")
    path = tmp_path / "masakarimonitors.conf"
    # auth_url has no default: as in any real file, the password plugin needs it
    path.write_text("\n".join(lines) + f"\n[DEFAULT]\nstate_path = {tmp_path / 'state'}\n"
                    "[api]\nauth_url = http://keystone.example:5000/v3\n")
    return path


def test_masakari_monitors_sample_config_is_accepted_as_is(tmp_path):
    conf = uncommented_sample(tmp_path)
    assert "retry_max = 12" in conf.read_text() and "monitoring_driver = default" in conf.read_text()
    r = cli(conf, "check-config")
    unknown = [line for line in r.stderr.splitlines() if "unknown option" in line]
    assert unknown == []
    config_errors = [line for line in r.stderr.splitlines()
                     if line.startswith("error: [")]  # option values, not daemon files
    assert config_errors == []


def test_sample_config_generation(tmp_path):
    out = tmp_path / "monitors.conf.sample"
    r = subprocess.run([str(BIN / "oslo-config-generator"), "--namespace", "compute-ha-monitors",
                        "--output-file", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    for needle in ("[delivery]", "#max_age = 0", "[webhook]", "#secret = <None>",
                   "[process]", "#process_list_path = /etc/masakarimonitors/process_list.yaml",
                   "[api]", "#api_interface = public", "[host]", "#state_path ="):
        assert needle in text, needle
