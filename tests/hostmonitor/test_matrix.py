"""The matrix file: our format, masakari-monitors' consul format, and clear errors."""
from __future__ import annotations

import textwrap

import pytest

from hostmonitor import matrix

UPS = {"management": "up", "tenant": "up", "storage": "up", "compute": "up"}

CONSUL_DEFAULT = """\
sequence: [manage, tenant, storage]
matrix:
  - health: [up, up, up]
    action: []
  - health: [up, up, down]
    action: [recovery]
  - health: [up, down, up]
    action: []
  - health: [up, down, down]
    action: [recovery]
  - health: [down, up, up]
    action: []
  - health: [down, up, down]
    action: [recovery]
  - health: [down, down, up]
    action: []
  - health: [down, down, down]
    action: [recovery]
"""


def write(tmp_path, text):
    path = tmp_path / "matrix.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.mark.parametrize("profile,row,expected", [
    ("cattle", {}, ()),
    ("cattle", {"management": "down"}, ("report_host_failure",)),
    ("cattle", {"tenant": "down"}, ("report_host_failure",)),
    ("cattle", {"storage": "down"}, ("report_host_failure",)),
    ("cattle", {"compute": "down"}, ("report_host_failure",)),
    ("cattle", {"tenant": "degraded"}, ("notify_operator",)),
    ("pets", {"management": "down"}, ("notify_operator",)),
    ("pets", {"tenant": "down"}, ("notify_operator",)),
    ("pets", {"storage": "down"}, ("report_host_failure",)),
    ("pets", {"compute": "down"}, ("notify_operator",)),
    ("pets", {"management": "down", "tenant": "down"}, ("report_host_failure",)),
])
def test_builtin_table(profile, row, expected):
    assert matrix.Matrix(None, profile).lookup({**UPS, **row})[0] == expected


def test_consul_default_matrix_is_accepted(tmp_path):
    m = matrix.load(write(tmp_path, CONSUL_DEFAULT))
    assert m.lookup({**UPS, "storage": "down"})[0] == ("report_host_failure",)
    assert m.lookup({**UPS, "management": "down"})[0] == ()
    actions, rule = m.lookup({**UPS, "tenant": "degraded", "storage": "down"})
    assert actions == ("report_host_failure",) and rule.endswith(":5")


def test_our_format_first_match_wins(tmp_path):
    m = matrix.load(write(tmp_path, """\
        matrix:
          - {storage: down, actions: [report_host_failure, notify_operator]}
          - {management: [down, degraded], actions: [notify_operator]}
          - {actions: [none]}
        """))
    assert m.lookup({**UPS, "storage": "down"})[0] == ("report_host_failure",
                                                       "notify_operator")
    assert m.lookup({**UPS, "management": "degraded"})[0] == ("notify_operator",)
    assert m.lookup(UPS)[0] == ()


@pytest.mark.parametrize("text,message", [
    ("matrix:\n  - {storage: down, actions: [reboot]}\n  - {actions: [none]}\n",
     ":2: unknown action 'reboot'"),
    ("matrix:\n  - {storage: down, actions: [none]}\n", ":2: matrix does not cover "
     "management=up, tenant=up, storage=up, compute=up"),
    ("matrix:\n  - {storage: sideways, actions: [none]}\n", ":2: storage: unknown state"),
    ("matrix:\n  - {strage: down, actions: [none]}\n", ":2: unknown key 'strage'"),
    ("matrix:\n  - {storage: down\n", ":3: invalid YAML"),
    ("sequence: [manage, tenant, storage]\nmatrix:\n  - health: [up, up]\n    action: []\n",
     ":3: health has 2 values"),
    ("sequence: [manage, tenant, storage]\nmatrix:\n  - health: [up, up, up]\n"
     "    action: [recover]\n", ":4: unknown action 'recover'"),
])
def test_bad_matrix_names_the_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(matrix.MatrixError) as err:
        matrix.load(path)
    assert str(err.value).startswith(path + ":")
    assert message in str(err.value)


def test_daemon_and_check_config_refuse_a_bad_matrix(tmp_path):
    import subprocess

    from tests.helpers import BIN, cli, write_conf

    path = write(tmp_path, "matrix:\n  - {storage: down, actions: [reboot]}\n"
                           "  - {actions: [none]}\n")
    conf = write_conf(tmp_path / "hm.conf", hostname="x", state_path=tmp_path, endpoint=None,
                      sections={"hostmonitor": {"matrix_file": path}})
    out = subprocess.run([str(BIN / "ha-hostmonitor"), "--config-file", str(conf)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert f"{path}:2: unknown action 'reboot'" in out.stderr
    out = cli(conf, "check-config")
    assert out.returncode != 0
    assert f"{path}:2: unknown action 'reboot'" in out.stdout + out.stderr
