"""CI=true turns a skip (something the test needs is missing) into a failure."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_pytest(tmp_path, ci: str | None):
    test = tmp_path / "test_needs_qemu.py"
    test.write_text("import pytest\n\n"
                    "def test_guest():\n    pytest.skip('qemu-system-x86 not installed')\n\n"
                    "@pytest.mark.skipif(True, reason='journald missing')\n"
                    "def test_journal():\n    pass\n\n"
                    "@pytest.mark.xfail(reason='known')\n"
                    "def test_known():\n    assert False\n\n"
                    "def test_fine():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.ci_skips", "-q",
                           "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(test)],
                          capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)},
                          cwd=tmp_path, timeout=120)


def test_skips_fail_under_ci(tmp_path):
    r = run_pytest(tmp_path, "true")
    assert r.returncode == 1, r.stdout
    # the skipif marker acts in setup, so that one shows as an error
    assert "1 failed, 1 passed, 1 xfailed, 1 error" in r.stdout, r.stdout
    assert "make test installs what this test needs: qemu-system-x86 not installed" in r.stdout


def test_skips_stay_skips_outside_ci(tmp_path):
    r = run_pytest(tmp_path, None)
    assert r.returncode == 0, r.stdout
    assert "1 passed, 2 skipped, 1 xfailed" in r.stdout, r.stdout
