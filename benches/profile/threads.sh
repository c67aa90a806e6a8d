#!/usr/bin/env bash
# threads.sh NAME LEDGER MESSAGES: CPU µs per message of each markgate thread (by name) at
# CONNS connections (default 64), from /proc/PID/task/*/stat around the run. Env: BIN.
set -euo pipefail
# shellcheck source=benches/profile/common.sh
. "$(dirname "$0")/common.sh"
snap() {
	for t in /proc/"$p"/task/*; do echo "$(tr ' ' _ <"$t/comm") $(awk '{print $14+$15}' "$t/stat")"; done |
		awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' | sort
}
snap >"/tmp/threads-$name.a"
"$load" --connect "unix:$s" --eml "$repo/benches/data/small-2k.eml" --connections "$c" --messages "$n" \
	--unique-ids --pid "$p" --json --label "$name"
snap >"/tmp/threads-$name.b"
join "/tmp/threads-$name.a" "/tmp/threads-$name.b" | awk -v n="$n" '{printf "   %-18s %7.1f\n", $1, ($3-$2)*10000/n}'
kill "$p"
while kill -0 "$p" 2>/dev/null; do sleep 0.05; done # not our child: started by start.sh
