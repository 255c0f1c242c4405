"""Hardware health: memory errors and sensors that say a host is degrading before it fails.

Sources, each used where present (a machine without EDAC, hwmon, rasdaemon or a BMC simply
has nothing to report from it):
  * EDAC counters: ``<sysfs_root>/devices/system/edac/mc/mc*/{ce_count,ue_count}``;
    corrected errors at or above ``hardware_ce_threshold``, uncorrected at or above
    ``hardware_ue_threshold`` = degraded. The counters only grow within a boot.
  * sysfs hwmon: any ``<sysfs_root>/class/hwmon/hwmon*/*_alarm`` or ``*_fault`` reading 1.
  * rasdaemon's database (``hardware_rasdaemon_db``) when it exists: the same thresholds
    on its memory-controller events, and any MCE record it holds.
  * IPMI: ``ipmitool sdr list`` (when ``hardware_ipmi`` is on and ipmitool is installed),
    bounded by ``storage_check_timeout``: a sensor whose status is not ``ok``/``ns``
    (cr, nr, nc, lnc, ...) = degraded.
Counters have no event of their own, so this runs every ``hardware_check_interval`` (a
safety net); an EDAC or MCE line in the kernel log triggers a run at once (push).
"""
from __future__ import annotations

import dataclasses
import glob
import logging
import os
import shutil
import sqlite3
import subprocess

LOG = logging.getLogger(__name__)

UP, DEGRADED = "up", "degraded"
_IPMI_OK = {"ok", "ns"}


@dataclasses.dataclass
class Finding:
    source: str
    detail: str


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _int(path: str) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


class HardwareChecks:
    def __init__(self, conf):
        hm = conf.hostmonitor
        self.sysfs = hm.sysfs_root
        self.ce_threshold = hm.hardware_ce_threshold
        self.ue_threshold = hm.hardware_ue_threshold
        self.ras_db = hm.hardware_rasdaemon_db
        self.ipmi = hm.hardware_ipmi
        self.timeout = hm.storage_check_timeout

    def edac(self) -> list[Finding]:
        out = []
        for mc in sorted(glob.glob(os.path.join(self.sysfs, "devices/system/edac/mc/mc*"))):
            name = os.path.basename(mc)
            ce, ue = _int(os.path.join(mc, "ce_count")), _int(os.path.join(mc, "ue_count"))
            if ue is not None and ue >= self.ue_threshold:
                out.append(Finding("edac", f"{name}: {ue} uncorrected memory error(s) "
                                           f"(threshold {self.ue_threshold})"))
            if ce is not None and ce >= self.ce_threshold:
                out.append(Finding("edac", f"{name}: {ce} corrected memory error(s) "
                                           f"(threshold {self.ce_threshold})"))
        return out

    def hwmon(self) -> list[Finding]:
        out = []
        for chip in sorted(glob.glob(os.path.join(self.sysfs, "class/hwmon/hwmon*"))):
            label = _read(os.path.join(chip, "name")) or os.path.basename(chip)
            for attr in sorted(glob.glob(os.path.join(chip, "*_alarm"))
                               + glob.glob(os.path.join(chip, "*_fault"))):
                if _int(attr) == 1:
                    sensor = os.path.basename(attr)
                    what = _read(os.path.join(chip, sensor.rsplit("_", 1)[0] + "_label"))
                    out.append(Finding("hwmon", f"{label} {sensor}"
                                                + (f" ({what})" if what else "") + " = 1"))
        return out

    def rasdaemon(self) -> list[Finding]:
        if not self.ras_db or not os.path.exists(self.ras_db):
            return []
        out = []
        try:
            db = sqlite3.connect(f"file:{self.ras_db}?mode=ro", uri=True, timeout=1)
            try:
                tables = {r[0] for r in db.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'")}
                if "mc_event" in tables:
                    counts = dict(db.execute(
                        "SELECT CASE WHEN lower(err_type) = 'corrected' THEN 'ce' ELSE 'ue' "
                        "END, SUM(COALESCE(err_count, 1)) FROM mc_event GROUP BY 1"))
                    if counts.get("ue", 0) >= self.ue_threshold:
                        out.append(Finding("rasdaemon", f"{counts['ue']} uncorrected memory "
                                                        "error(s) recorded"))
                    if counts.get("ce", 0) >= self.ce_threshold:
                        out.append(Finding("rasdaemon", f"{counts['ce']} corrected memory "
                                                        "error(s) recorded"))
                if "mce_record" in tables:
                    n = db.execute("SELECT COUNT(*) FROM mce_record").fetchone()[0]
                    if n:
                        out.append(Finding("rasdaemon", f"{n} machine check record(s)"))
            finally:
                db.close()
        except sqlite3.Error as exc:
            out.append(Finding("rasdaemon", f"cannot read {self.ras_db}: {exc}"))
        return out

    def ipmitool(self) -> list[Finding]:
        if not self.ipmi:
            return []
        exe = shutil.which("ipmitool")
        if exe is None:
            return []
        try:
            res = subprocess.run([exe, "sdr", "list"], capture_output=True, text=True,
                                 timeout=self.timeout)
        except (subprocess.TimeoutExpired, OSError) as exc:
            LOG.warning("ipmitool sdr list: %s", exc)
            return []
        out = []
        for line in res.stdout.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) >= 3 and parts[2].lower() not in _IPMI_OK:
                out.append(Finding("ipmi", f"{parts[0]}: {parts[1]} ({parts[2]})"))
        return out

    def run(self) -> tuple[str, list[Finding]]:
        findings = []
        for check in (self.edac, self.hwmon, self.rasdaemon, self.ipmitool):
            try:
                findings += check()
            except Exception:  # noqa: BLE001 - one broken reader never hides the others
                LOG.exception("hardware check %s failed", check.__name__)
        return (DEGRADED if findings else UP), findings
