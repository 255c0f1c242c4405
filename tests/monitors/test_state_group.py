"""[DEFAULT] state_group: the outbox shared with a group (Pacemaker's hacluster through
haclient) — a setgid 2770 directory and 0660 database files in that group; without it,
root only. The hand-over by a real hacluster process under systemd is in
tests/systemd/test_live.py."""
import grp
import os
import stat

import pytest

from monitors import config
from monitors.outbox import Outbox

GROUP = "haclient"
needs_group = pytest.mark.skipif(
    os.geteuid() != 0 or not any(g.gr_name == GROUP for g in grp.getgrall()),
    reason="needs root and the haclient group (apt pacemaker)")


@needs_group
def test_group_gets_a_setgid_directory_and_0660_files(tmp_path):
    state = tmp_path / "state"
    box = Outbox(str(state / "outbox.sqlite"), group=GROUP)
    box.close()
    gid = grp.getgrnam(GROUP).gr_gid
    st = os.stat(state)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o2770, gid)
    for name in ("outbox.sqlite", "outbox.sqlite-wal", "outbox.sqlite-shm"):
        if (state / name).exists():  # -wal/-shm exist while a connection is open
            st = os.stat(state / name)
            assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, gid), name


@needs_group
def test_an_outbox_made_root_only_before_is_opened_up(tmp_path):
    """A host that ran without state_group: the next daemon start fixes modes and group."""
    path = tmp_path / "state" / "outbox.sqlite"
    Outbox(str(path)).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    Outbox(str(path), group=GROUP).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    assert os.stat(path).st_gid == grp.getgrnam(GROUP).gr_gid


def test_without_group_the_outbox_stays_root_only(tmp_path):
    path = tmp_path / "state" / "outbox.sqlite"
    Outbox(str(path)).close()
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_an_unknown_group_is_named(tmp_path):
    with pytest.raises(PermissionError, match="state_group: no group named 'no-such-grp'"):
        Outbox(str(tmp_path / "outbox.sqlite"), group="no-such-grp")


def test_open_outbox_follows_the_option(tmp_path):
    conf = config.new_conf()
    conf([], default_config_files=[])
    conf.set_override("state_path", str(tmp_path / "s"))
    assert conf.state_group == ""
    config.open_outbox(conf).close()
    assert stat.S_IMODE(os.stat(tmp_path / "s").st_mode) == 0o700


@needs_group
def test_check_config_names_a_secret_the_group_can_read_and_an_unreadable_main_file(tmp_path):
    from tests.helpers import cli

    main = tmp_path / "monitors.conf"
    (tmp_path / "pl.yaml").write_text("[]\n")
    common = (f"[DEFAULT]\nstate_group = {GROUP}\nstate_path = {tmp_path}/s\n"
              f"[process]\nprocess_list_path = {tmp_path}/pl.yaml\n")
    main.write_text(common + "[api]\nauth_type = password\npassword = s3cret\n")
    os.chmod(main, 0o640)  # root:root: the group cannot read it
    r = cli(main, "check-config")
    assert "group haclient ([DEFAULT] state_group) cannot read it" in r.stderr, r.stderr
    os.chown(main, 0, grp.getgrnam(GROUP).gr_gid)
    r = cli(main, "check-config")
    assert f"{main}:8: warning: [api] password is a secret in a file group haclient" in r.stderr
    assert "s3cret" not in r.stdout + r.stderr
    secrets = tmp_path / "secrets.conf"
    main.write_text(common)
    secrets.write_text("[api]\nauth_type = password\npassword = s3cret\n")
    os.chmod(secrets, 0o600)
    r = cli(main, "--config-file", str(secrets), "check-config")
    assert "state_group" not in r.stderr, r.stderr


def test_check_config_names_an_unknown_state_group(tmp_path):
    from tests.helpers import cli

    main = tmp_path / "monitors.conf"
    main.write_text(f"[DEFAULT]\nstate_group = no-such-grp\nstate_path = {tmp_path}/s\n")
    r = cli(main, "check-config")
    assert r.returncode == 1 and "state_group: no group named 'no-such-grp'" in r.stderr
