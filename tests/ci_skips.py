"""Under CI (``CI=true``) a skipped test is a failed test.

Tests skip when something they need is missing (QEMU, journald, root, bindfs, ...). On a
developer's machine that is a convenience; under CI it would hide that the suite did not
test what it claims, although ``make test`` installs everything they need. Imported by
tests/conftest.py; a plugin module of its own so it can be tested (``-p tests.ci_skips``).
"""
from __future__ import annotations

import os

import pytest


def ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = (f"skipped under CI=true, but make test installs what this test needs: "
                       f"{reason}")
