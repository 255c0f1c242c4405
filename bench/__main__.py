"""`make bench`: run every benchmark (bench/bench_*.py), then assemble docs/benchmarks.md
from the fragments they write to docs/benchmarks.d/ (a markdown section and a summary
row set each), and print the one summary table. `--assemble` only assembles."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bench import summary

ROOT = Path(__file__).resolve().parents[1]
FRAGMENTS = ROOT / "docs" / "benchmarks.d"
ORDER = ["delivery", "notify-start", "instancemonitor", "libvirtd-hang", "guest-agent-freeze",
         "processmonitor",
         "processmonitor-freeze", "hostmonitor-links", "hostmonitor-peers",
         "hostmonitor-peers-live", "pacemaker-remote", "hostmonitor-kernel", "recovery"]

HEADER = """# Benchmarks

Every figure below comes from a runnable script in `bench/`, against the real components
(the real masakari-api 22.0.0 on loopback, a real libvirtd, real processes, real network
namespaces, a real etcd cluster), side by side with masakari-monitors 22.0.0 where it has
the same feature. The machine is a noisy 2-core VM: compare the ratios measured in one run
rather than absolute times. `make bench` runs them all and rewrites this file; each section
names the command that reproduces it.

## Summary: ours beside masakari-monitors

Lower is better in every row; the last column is how many times lower ours is (below 1×:
masakari-monitors is faster there). Rows where masakari-monitors has no such feature say
what it does instead. Details, conditions and commands in the sections below.

"""


def assemble() -> Path:
    parts = sorted(FRAGMENTS.glob("*.md"),
                   key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem))
    out = ROOT / "docs" / "benchmarks.md"
    out.write_text(HEADER + summary.table(ORDER) + "\n\n"
                   + "\n\n".join(p.read_text().strip() for p in parts) + "\n")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--assemble", action="store_true", help="only rebuild docs/benchmarks.md")
    args = ap.parse_args(argv)
    failed = []
    if not args.assemble:
        for script in sorted((ROOT / "bench").glob("bench_*.py")):
            print(f"== {script.stem}", flush=True)
            r = subprocess.run([sys.executable, "-m", f"bench.{script.stem}"], cwd=ROOT)
            if r.returncode:
                failed.append(script.stem)
    out = assemble()
    print(summary.table(ORDER))
    print(f"wrote {out}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
