#!/usr/bin/env python3
"""Stands in for stonith_admin ONLY because the fencer (pacemaker-fenced, needs corosync)
cannot run in this test environment: prints the recorded format of
`stonith_admin --history NODE --output-as=xml` (data/stonith_admin_history.xml) with a
successful fencing of NODE completed now, when NODE is listed in $FAKE_FENCED (comma
separated); otherwise an empty history."""
import datetime as dt
import os
import re
import sys
from pathlib import Path

args = sys.argv[1:]
target = args[args.index("--history") + 1]
fenced = [n for n in os.environ.get("FAKE_FENCED", "").split(",") if n]
text = (Path(__file__).parent / "data/stonith_admin_history.xml").read_text()
text = re.sub(r"<!--.*?-->\s*", "", text, flags=re.S)
if target not in fenced:
    text = re.sub(r'<list name="event" count="2">.*?</list>', '<list name="event" count="0"/>',
                  text, flags=re.S)
now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S +00:00")
print(text.replace("TARGET", target).replace("COMPLETED", now))
