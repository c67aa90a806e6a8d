#!/usr/bin/env bash
# callgrind.sh LEDGER [CONNS] [BIN]: instructions per message under callgrind, all threads,
# unique ids: (Ir(1400 messages) - Ir(400)) / 1000, so start-up cancels out. The output files
# stay in $PROFILE_DIR/cg-LEDGER-{400,1400}/cg.out for callgrind_annotate (see cgdiff.py).
# valgrind has no SHA extensions: sha2 runs its software rounds here (about 89k instructions
# for the ledger digest of small-2k, 80k for the audit chain); judge hashing with perf.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
led=$1 c=${2:-64} bin=${3:-$repo/target/release/markgate}
load=$repo/target/release/markgate-load
irs=()
for n in 400 1400; do
	w=${PROFILE_DIR:-/tmp/markgate-profile}/cg-$led-$n
	rm -rf "$w"
	mkdir -p "$w/audit"
	cat >"$w/markgate.toml" <<T
listen = "unix:$w/m.sock"
[socket]
mode = "0666"
[audit]
path = "$w/audit/audit.jsonl"
sync = "batch"
preallocate = 4194304
[ledger]
backend = "$led"
path = "$w/ledger.sqlite"
T
	(cd "$repo" && exec valgrind --tool=callgrind --callgrind-out-file="$w/cg.out" "$bin" run --config "$w/markgate.toml" 2>>"$w/log") &
	p=$!
	for _ in $(seq 400); do [ -S "$w/m.sock" ] && break; sleep 0.05; done
	"$load" --connect "unix:$w/m.sock" --eml "$repo/benches/data/small-2k.eml" --connections "$c" \
		--messages "$n" --unique-ids --timeout 600 >/dev/null
	kill -TERM "$p"
	wait "$p" || true
	irs+=("$(sed -n 's/^summary: *\([0-9]*\).*/\1/p; s/^totals: *\([0-9]*\).*/\1/p' "$w/cg.out" | head -1)")
done
echo "$led conns=$c instructions/message=$(((irs[1] - irs[0]) / 1000))"
