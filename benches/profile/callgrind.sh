#!/usr/bin/env bash
# callgrind.sh LEDGER [CONNS] [BIN]: instructions per message under callgrind, all threads,
# unique ids: (Ir(1400 messages) - Ir(400)) / 1000, so start-up cancels out. The output files
# stay in $PROFILE_DIR/cg-LEDGER-{400,1400}.out for callgrind_annotate (see cgdiff.py).
# valgrind has no SHA extensions: sha2 runs its software rounds here (about 89k instructions
# for the ledger digest of small-2k, 80k for the audit chain); judge hashing with perf.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
led=$1 c=${2:-64} bin=${3:-$repo/target/release/markgate}
load=$repo/target/release/markgate-load
irs=()
for n in 400 1400; do
	out=${PROFILE_DIR:-/tmp/markgate-profile}/cg-$led-$n.out
	read -r p s < <(WRAP="valgrind --tool=callgrind --callgrind-out-file=$out" "$here/start.sh" "cg-$led-$n" "$led" "$bin")
	"$load" --connect "unix:$s" --eml "$repo/benches/data/small-2k.eml" --connections "$c" \
		--messages "$n" --unique-ids --timeout 600 >/dev/null
	kill -TERM "$p"
	while kill -0 "$p" 2>/dev/null; do sleep 0.05; done # not our child: started by start.sh
	irs+=("$(sed -n 's/^summary: *\([0-9]*\).*/\1/p; s/^totals: *\([0-9]*\).*/\1/p' "$out" | head -1)")
done
echo "$led conns=$c instructions/message=$(((irs[1] - irs[0]) / 1000))"
