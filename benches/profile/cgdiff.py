"""cgdiff.py [ON] [OFF] [ROWS]: per-function instructions per message, callgrind.sh's runs
of ledger ON (default sqlite) against OFF (default off), largest differences first."""
import collections
import os
import re
import subprocess
import sys

DIR = os.environ.get("PROFILE_DIR", "/tmp/markgate-profile")


def load(path):
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", path],
                         capture_output=True, text=True, check=True).stdout
    d = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+(.*)$", line)
        if m:
            name = re.sub(r"\s*\[.*\]$", "", m.group(2))
            if name.startswith("/") and ":" in name:
                name = name.split(":", 1)[1]
            d[name] += int(m.group(1).replace(",", ""))
    return d


def per_message(led):
    a = load(f"{DIR}/cg-{led}-1400.out")
    b = load(f"{DIR}/cg-{led}-400.out")
    return {k: (a[k] - b[k]) / 1000 for k in set(a) | set(b)}


on_name = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
off_name = sys.argv[2] if len(sys.argv) > 2 else "off"
rows = int(sys.argv[3]) if len(sys.argv) > 3 else 40
on, off = per_message(on_name), per_message(off_name)
table = sorted(((on.get(k, 0) - off.get(k, 0), on.get(k, 0), off.get(k, 0), k)
                for k in set(on) | set(off)), reverse=True)
print(f"{'diff':>9} {'on':>9} {'off':>9}  function")
for diff, a, b, k in table[:rows]:
    print(f"{diff:9.0f} {a:9.0f} {b:9.0f}  {k[:120]}")
