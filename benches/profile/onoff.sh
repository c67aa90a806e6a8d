#!/usr/bin/env bash
# onoff.sh [BIN] [CONNS] [MESSAGES] [ROUNDS]: ledger on and off alternated, small-2k, unique
# ids; prints each round and the per-round on/off ratios with their median.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${1:-$repo/target/release/markgate} c=${2:-64} n=${3:-30000} r=${4:-5}
load=$repo/target/release/markgate-load
for _ in $(seq "$r"); do
	for led in sqlite off; do
		read -r p s < <("$here/start.sh" "onoff-$led" "$led" "$bin")
		"$load" --connect "unix:$s" --eml "$repo/benches/data/small-2k.eml" --connections "$c" \
			--messages "$n" --warmup $((c * 2)) --unique-ids --pid "$p" --json --label "$led" \
			--expect-header X-Protective-Marking
		kill "$p"
		while kill -0 "$p" 2>/dev/null; do sleep 0.05; done # not our child: started by start.sh
	done
done | python3 -c '
import json, statistics as st, sys
rows = [json.loads(l) for l in sys.stdin]
for d in rows:
    print(d["label"], round(d["msgs_per_sec"]), d["cpu_us_per_msg"], d["p50_us"])
on = [d for d in rows if d["label"] == "sqlite"]
off = [d for d in rows if d["label"] == "off"]
r = [a["msgs_per_sec"] / b["msgs_per_sec"] for a, b in zip(on, off)]
print("per-round on/off", [round(x, 3) for x in r], "median", round(st.median(r), 3),
      "CPU on/off", st.median(d["cpu_us_per_msg"] for d in on), st.median(d["cpu_us_per_msg"] for d in off))
'
